package restore

import (
	"reflect"
	"testing"

	procfs "github.com/crtools/crtools/engine/proc"
)

// TestCredsEqual: equal tells apart credentials that differ in any one
// field (a field added to creds must be compared, and listed here).
func TestCredsEqual(t *testing.T) {
	base := func() creds {
		return creds{uid: 1, euid: 2, suid: 3, fsuid: 4, gid: 5, egid: 6, sgid: 7, fsgid: 8, groups: []uint32{9, 10},
			inh: 11, prm: 12, eff: 13, bnd: 14, amb: 15, secbits: 16}
	}
	change := map[string]func(c *creds){
		"uid": func(c *creds) { c.uid++ }, "euid": func(c *creds) { c.euid++ },
		"suid": func(c *creds) { c.suid++ }, "fsuid": func(c *creds) { c.fsuid++ },
		"gid": func(c *creds) { c.gid++ }, "egid": func(c *creds) { c.egid++ },
		"sgid": func(c *creds) { c.sgid++ }, "fsgid": func(c *creds) { c.fsgid++ },
		"groups": func(c *creds) { c.groups[1]++ },
		"inh":    func(c *creds) { c.inh++ }, "prm": func(c *creds) { c.prm++ },
		"eff": func(c *creds) { c.eff++ }, "bnd": func(c *creds) { c.bnd++ },
		"amb": func(c *creds) { c.amb++ }, "secbits": func(c *creds) { c.secbits++ },
		"noNewPrivs": func(c *creds) { c.noNewPrivs = !c.noNewPrivs },
	}
	if b := base(); !b.equal(base()) {
		t.Fatal("creds not equal to the same creds")
	}
	typ := reflect.TypeOf(creds{})
	for i := 0; i < typ.NumField(); i++ {
		name := typ.Field(i).Name
		f, ok := change[name]
		if !ok {
			t.Errorf("field %s of creds not covered by this test", name)
			continue
		}
		b, c := base(), base()
		f(&c)
		if b.equal(c) || c.equal(b) {
			t.Errorf("creds that differ in %s compare equal", name)
		}
	}
}

// TestCredsFromStatus: each id, group and capability set of a status goes
// to its own field of creds.
func TestCredsFromStatus(t *testing.T) {
	in := "Name:\tx\nTgid:\t5\nPid:\t5\nPPid:\t1\nTracerPid:\t0\n" +
		"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10 \n" +
		"SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\n" +
		"CapInh:\t000000000000000b\nCapPrm:\t000000000000000c\nCapEff:\t000000000000000d\n" +
		"CapBnd:\t000001ffffffffff\nCapAmb:\t000000000000000f\nNoNewPrivs:\t1\n"
	s, err := procfs.ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := creds{uid: 1, euid: 2, suid: 3, fsuid: 4, gid: 5, egid: 6, sgid: 7, fsgid: 8, groups: []uint32{9, 10},
		inh: 11, prm: 12, eff: 13, bnd: 0x1ffffffffff, amb: 15, noNewPrivs: true}
	if got := credsFromStatus(s); !reflect.DeepEqual(got, want) {
		t.Errorf("credsFromStatus:\n got %+v\nwant %+v", got, want)
	}
}
