package testenv

import "os"

// WriteEndpoint writes a fixture server's address to file (when file is
// not ""), under another name first and then renamed, so the script
// polling for it never reads half an address. The demo's and e2e's
// servers (hack/s3-mem, hub-mem, registry-mem) announce themselves so.
func WriteEndpoint(file, endpoint string) error {
	if file == "" {
		return nil
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(endpoint+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
