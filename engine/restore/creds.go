package restore

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	procfs "github.com/crtools/crtools/engine/proc"
)

// Securebits and capability prctls not in x/sys/unix under these names.
const (
	secbitKeepCaps = 1 << 4
)

// restoreCreds gives the thread its dumped credentials. It runs last: the
// puppet starts with crtools' (root, all capabilities) and every step
// before may need them. When the image's credentials equal the puppet's,
// nothing is injected.
//
// Order: drop bounding-set capabilities and set securebits (both need
// CAP_SETPCAP), with SECBIT_KEEP_CAPS so the uid change keeps the permitted
// set; groups, gids, uids; then capset to the dumped sets (only lowering),
// ambient capabilities, KEEP_CAPS as dumped, and no_new_privs.
// cur are the thread's credentials now (credsFromStatus).
func (p *puppet) restoreCreds(c *pb.CredsEntry, cur creds) error {
	if c == nil {
		return nil
	}
	var err error
	want := credsFromImage(c)
	if want.equal(cur) {
		return nil
	}
	for capNr := 0; capNr < 64; capNr++ {
		bit := uint64(1) << capNr
		if cur.bnd&bit != 0 && want.bnd&bit == 0 {
			if _, err := p.callf(fmt.Sprintf("drop capability %d from the bounding set", capNr), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(capNr)); err != nil {
				return err
			}
		}
	}
	if want.secbits|secbitKeepCaps != cur.secbits {
		if _, err := p.callf("set securebits", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(want.secbits|secbitKeepCaps)); err != nil {
			return err
		}
	}
	if c.Groups != nil || len(c.GetGroups()) != len(cur.groups) {
		b := make([]byte, 4*len(c.GetGroups()))
		for i, g := range c.GetGroups() {
			le.PutUint32(b[4*i:], g)
		}
		a := uint64(0)
		if len(b) > 0 {
			if a, err = p.put(b); err != nil {
				return err
			}
		}
		if _, err := p.callf("set supplementary groups", unix.SYS_SETGROUPS, uint64(len(c.GetGroups())), a); err != nil {
			return err
		}
	}
	if _, err := p.callf("set gids", unix.SYS_SETRESGID, uint64(c.GetGid()), uint64(c.GetEgid()), uint64(c.GetSgid())); err != nil {
		return err
	}
	if _, err := p.callf("set fsgid", unix.SYS_SETFSGID, uint64(c.GetFsgid())); err != nil {
		return err
	}
	if _, err := p.callf("set uids", unix.SYS_SETRESUID, uint64(c.GetUid()), uint64(c.GetEuid()), uint64(c.GetSuid())); err != nil {
		return err
	}
	if _, err := p.callf("set fsuid", unix.SYS_SETFSUID, uint64(c.GetFsuid())); err != nil {
		return err
	}
	a, err := p.put(capBytes(int32(p.pid), want.eff, want.prm, want.inh))
	if err != nil {
		return err
	}
	if _, err := p.callf("set capabilities", unix.SYS_CAPSET, a, a+capHeaderSize); err != nil {
		return err
	}
	for capNr := 0; capNr < 64; capNr++ {
		if want.amb&(1<<capNr) != 0 {
			if _, err := p.callf(fmt.Sprintf("raise ambient capability %d", capNr), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(capNr), 0, 0); err != nil {
				return err
			}
		}
	}
	if want.secbits&secbitKeepCaps == 0 {
		if _, err := p.callf("clear keep-caps", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0); err != nil {
			return err
		}
	}
	if want.noNewPrivs && !cur.noNewPrivs {
		if _, err := p.callf("set no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// creds is the part of a task's credentials crtools restores.
type creds struct {
	uid, euid, suid, fsuid  uint32
	gid, egid, sgid, fsgid  uint32
	groups                  []uint32
	inh, prm, eff, bnd, amb uint64
	secbits                 uint32
	noNewPrivs              bool
}

func (a creds) equal(b creds) bool {
	if !slices.Equal(a.groups, b.groups) {
		return false
	}
	// Field by field (a struct with a slice is not comparable); once
	// per thread, so no fmt. TestCredsEqual checks every field counts.
	return a.uid == b.uid && a.euid == b.euid && a.suid == b.suid && a.fsuid == b.fsuid &&
		a.gid == b.gid && a.egid == b.egid && a.sgid == b.sgid && a.fsgid == b.fsgid &&
		a.inh == b.inh && a.prm == b.prm && a.eff == b.eff && a.bnd == b.bnd && a.amb == b.amb &&
		a.secbits == b.secbits && a.noNewPrivs == b.noNewPrivs
}

func capsOf(v []uint32) uint64 {
	var c uint64
	for i, w := range v {
		if i < 2 {
			c |= uint64(w) << (32 * i)
		}
	}
	return c
}

func credsFromImage(c *pb.CredsEntry) creds {
	return creds{
		uid: c.GetUid(), euid: c.GetEuid(), suid: c.GetSuid(), fsuid: c.GetFsuid(),
		gid: c.GetGid(), egid: c.GetEgid(), sgid: c.GetSgid(), fsgid: c.GetFsgid(),
		groups: c.GetGroups(),
		inh:    capsOf(c.GetCapInh()), prm: capsOf(c.GetCapPrm()), eff: capsOf(c.GetCapEff()),
		bnd: capsOf(c.GetCapBnd()), amb: capsOf(c.GetCapAmb()),
		secbits: c.GetSecbits(), noNewPrivs: c.GetNoNewPrivs() != 0,
	}
}

// credsFromStatus is the credentials in s, a parsed /proc/PID/status.
func credsFromStatus(s *procfs.Status) creds {
	// Securebits are not in /proc; crtools runs with none, and so does
	// a puppet.
	return creds{
		uid: s.Uid[0], euid: s.Uid[1], suid: s.Uid[2], fsuid: s.Uid[3],
		gid: s.Gid[0], egid: s.Gid[1], sgid: s.Gid[2], fsgid: s.Gid[3],
		groups: s.Groups,
		inh:    s.CapInh, prm: s.CapPrm, eff: s.CapEff, bnd: s.CapBnd, amb: s.CapAmb,
		noNewPrivs: s.NoNewPrivs == 1,
	}
}
