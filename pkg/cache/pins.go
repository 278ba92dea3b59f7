package cache

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Pin changes are appended to pins.log, one JSON line per change, with a
// single write(2) and no fsync. A pin is taken on the path of every pod start
// (the CSI plugin pins for each volume). An fsync there, or even the
// rename of a rewritten file, waits behind whatever writeback the node is
// doing, such as the download of another model. We measured pin p99 at
// 107 ms and max at 309 ms under a concurrent download when pins were
// fsynced with state.json.
//
// An appended line survives any crash of the agent, because the kernel keeps
// the page cache. Only a kernel crash or a power loss can lose the tail, and
// that also drops every bind mount, so no pod still reads a pin's model. The
// owners re-assert their pins afterwards: kubelet publishes again, and the
// plugin and the prefetcher reconcile. A torn last line is skipped.
//
// state.json, fsynced, carries the pins as of its last save. At start the
// log is replayed over it. Every op assigns one (revision, holder) key, so
// replaying ops the state already includes is harmless: the last op on a
// key wins, as it did in memory. A durable save made under s.mu empties the
// log.
const filePinLog = "pins.log"

// pinLogCompact is the log size past which a pin change triggers a durable
// save, which empties the log.
const pinLogCompact = 4 << 20

type pinOp struct {
	Pin    bool      `json:"pin"` // false: unpin
	ID     string    `json:"id"`  // ref ID
	Rev    string    `json:"rev"`
	Holder string    `json:"holder"`
	At     time.Time `json:"at"`
}

// logPinLocked records one pin change; s.mu must be held. The state is
// marked dirty so the next Flush also records it in state.json.
func (s *Store) logPinLocked(op pinOp) error {
	s.dirty = true
	if s.pinLog == nil {
		return s.saveLocked()
	}
	line, err := json.Marshal(op)
	if err != nil {
		return err
	}
	n, err := s.pinLog.Write(append(line, '\n'))
	s.pinLogSize += int64(n)
	if err != nil {
		return fmt.Errorf("cache: record pin: %w", classifyNoSpace(err))
	}
	if s.pinLogSize > pinLogCompact {
		return s.saveLocked()
	}
	return nil
}

// truncatePinLogLocked empties the log after state.json holds every pin
// durably; s.mu must be held (no op may slip in between).
func (s *Store) truncatePinLogLocked() error {
	if s.pinLog == nil || s.pinLogSize == 0 {
		return nil
	}
	if err := s.pinLog.Truncate(0); err != nil {
		return fmt.Errorf("cache: empty pin log: %w", err)
	}
	s.pinLogSize = 0
	return nil
}

// replayPinLog applies pins.log over the state loaded from state.json, then
// opens it for appending. moved maps ref IDs of an older store format to
// the current ones (see state.rekey).
func (s *Store) replayPinLog(moved map[string]string) error {
	path := filepath.Join(s.root, filePinLog)
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("cache: read pin log: %w", err)
	default:
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		applied, skipped := 0, 0
		for sc.Scan() {
			var op pinOp
			if json.Unmarshal(sc.Bytes(), &op) != nil {
				skipped++ // a torn tail after a power loss
				continue
			}
			if id, ok := moved[op.ID]; ok {
				op.ID = id
			}
			rs := s.state.Refs[op.ID]
			if rs == nil || rs.Revisions[op.Rev] == nil {
				continue // evicted since
			}
			r := rs.Revisions[op.Rev]
			if op.Pin {
				if r.Pins == nil {
					r.Pins = map[string]time.Time{}
				}
				r.Pins[op.Holder] = op.At
			} else {
				delete(r.Pins, op.Holder)
			}
			applied++
		}
		f.Close()
		if err := sc.Err(); err != nil {
			s.log.Warn("pin log partly unreadable; owners re-assert their pins", "err", err)
		}
		if skipped > 0 {
			s.log.Warn("pin log: skipped torn lines", "lines", skipped)
		}
		if applied > 0 {
			s.dirty = true
		}
	}
	lf, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("cache: open pin log: %w", err)
	}
	st, err := lf.Stat()
	if err != nil {
		lf.Close()
		return fmt.Errorf("cache: open pin log: %w", err)
	}
	s.pinLog, s.pinLogSize = lf, st.Size()
	return nil
}
