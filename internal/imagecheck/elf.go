package imagecheck

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
)

// machines maps a platform's architecture (GOARCH spelling, as in OCI) to
// the ELF machine its kernel runs. Only the platforms modelcache ships.
var machines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// checkBinary checks that r is a static ELF executable for p, built by Go
// for p with CGO_ENABLED=0 and -trimpath. It returns the ELF machine found
// and every problem, each its own error so the caller can name the file in
// each.
func checkBinary(r sizedReaderAt, p platform) (string, []error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", []error{fmt.Errorf("%w: %v", ErrNotELF, err)}
	}
	defer f.Close()
	machine := f.Machine.String()
	var errs []error
	if want, ok := machines[p.Architecture]; !ok {
		errs = append(errs, fmt.Errorf("%w: no ELF machine known for architecture %q", ErrPlatform, p.Architecture))
	} else if f.Machine != want {
		errs = append(errs, fmt.Errorf("%w: %s, want %s for %s", ErrMachine, f.Machine, want, p))
	}
	errs = append(errs, checkStatic(f)...)
	errs = append(errs, checkGoBuild(r, p)...)
	return machine, errs
}

// checkStatic fails on a program interpreter or a DT_NEEDED entry. It reads
// the dynamic segment through the program headers, which the kernel and the
// loader use, not the section headers, which a stripped file may lack.
func checkStatic(f *elf.File) []error {
	var errs []error
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 4096))
			errs = append(errs, fmt.Errorf("%w: PT_INTERP asks for the loader %q", ErrNotStatic, trimNUL(interp)))
		case elf.PT_DYNAMIC:
			n, err := countNeeded(f, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: reading PT_DYNAMIC: %v", ErrNotStatic, err))
			} else if n > 0 {
				libs, _ := f.ImportedLibraries()
				errs = append(errs, fmt.Errorf("%w: %d DT_NEEDED entries %q", ErrNotStatic, n, libs))
			}
		}
	}
	return errs
}

// countNeeded counts DT_NEEDED tags in a PT_DYNAMIC segment.
func countNeeded(f *elf.File, p *elf.Prog) (int, error) {
	data, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
	if err != nil {
		return 0, err
	}
	entry, word := 16, 8
	if f.Class == elf.ELFCLASS32 {
		entry, word = 8, 4
	}
	n := 0
	for off := 0; off+entry <= len(data); off += entry {
		var tag uint64
		if word == 8 {
			tag = f.ByteOrder.Uint64(data[off:])
		} else {
			tag = uint64(f.ByteOrder.Uint32(data[off:]))
		}
		if elf.DynTag(tag) == elf.DT_NULL {
			break
		}
		if elf.DynTag(tag) == elf.DT_NEEDED {
			n++
		}
	}
	return n, nil
}

// checkGoBuild reads the build settings Go embeds in every binary: they
// say how it was built, which the ELF headers alone do not (a -trimpath
// build looks like any other).
func checkGoBuild(r io.ReaderAt, p platform) []error {
	info, err := buildinfo.Read(r)
	if err != nil {
		return []error{fmt.Errorf("%w: no Go build information: %v", ErrBuild, err)}
	}
	got := map[string]string{}
	for _, s := range info.Settings {
		got[s.Key] = s.Value
	}
	want := map[string]string{"GOOS": p.OS, "GOARCH": p.Architecture, "CGO_ENABLED": "0", "-trimpath": "true"}
	var errs []error
	for _, k := range []string{"GOOS", "GOARCH", "CGO_ENABLED", "-trimpath"} {
		if got[k] != want[k] {
			errs = append(errs, fmt.Errorf("%w: %s=%q, want %q", ErrBuild, k, got[k], want[k]))
		}
	}
	return errs
}

func trimNUL(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
