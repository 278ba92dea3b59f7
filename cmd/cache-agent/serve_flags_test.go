package main

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512B": 512, "16MiB": 16 << 20, "16Mi": 16 << 20,
		"1.5GiB": 3 << 29, "2TB": 2e12, "500KB": 500e3, "500k": 500e3, "64MiB": 64 << 20, " 8MiB ": 8 << 20, "0": 0, "1.5": 2} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1Mi", "ten", "16MB/s", "9999999Ei", "1Mix"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
}
