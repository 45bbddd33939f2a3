// Package netlock is crtools' network lock: while a tree with established
// TCP connections is dumped and until it is restored, the packets of those
// connections are dropped, so that neither side's kernel answers the other
// with a reset (the dumped socket is gone between the kill and the
// restore; its peer's retransmissions would otherwise meet no socket).
//
// A lock is one nftables table of the inet family with an input and an
// output chain (both hooks: on loopback a packet passes both) holding, for
// every locked connection, a drop rule per direction. The table's name is
// derived from the connection (TableName), so the restore, another crtools
// process, removes exactly the tables of the connections it restored.
package netlock

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Conn is one TCP connection, seen from the dumped side.
type Conn struct {
	Local, Remote netip.AddrPort
}

func (c Conn) String() string { return c.Local.String() + "->" + c.Remote.String() }

// TableName is the nftables table that locks c.
func TableName(c Conn) string {
	r := strings.NewReplacer(":", "_", ".", "_", "[", "", "]", "")
	return "crtools-tcp-" + r.Replace(c.Local.String()) + "-" + r.Replace(c.Remote.String())
}

// Lock adds the table that drops every packet of c, both ways.
func Lock(c Conn) error {
	if c.Local.Addr().Is4() != c.Remote.Addr().Is4() {
		return fmt.Errorf("lock connection %s: mixed address families", c)
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lock connection %s: open nftables: %w", c, err)
	}
	defer nc.CloseLasting()
	t := nc.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(c)})
	drop := nftables.ChainPolicyAccept
	for _, hook := range []*nftables.ChainHook{nftables.ChainHookInput, nftables.ChainHookOutput} {
		name := "input"
		if hook == nftables.ChainHookOutput {
			name = "output"
		}
		ch := nc.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRaw, Policy: &drop})
		nc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: matchDrop(c.Local, c.Remote)})
		nc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: matchDrop(c.Remote, c.Local)})
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("lock connection %s: add nftables table %s: %w", c, TableName(c), err)
	}
	return nil
}

// Unlock removes the table of c. A table that is not there is not an
// error (the lock may never have been taken, or already been removed).
func Unlock(c Conn) error {
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("unlock connection %s: open nftables: %w", c, err)
	}
	defer nc.CloseLasting()
	nc.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(c)})
	if err := nc.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unlock connection %s: delete nftables table %s: %w", c, TableName(c), err)
	}
	return nil
}

// Locked reports whether the table of c exists.
func Locked(c Conn) (bool, error) {
	nc, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	defer nc.CloseLasting()
	ts, err := nc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == TableName(c) {
			return true, nil
		}
	}
	return false, nil
}

// matchDrop drops TCP packets from src to dst.
func matchDrop(src, dst netip.AddrPort) []expr.Any {
	proto, saddrOff, daddrOff, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if !src.Addr().Is4() {
		proto, saddrOff, daddrOff, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dst.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(src.Port())},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(dst.Port())},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
