package ns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// Network namespaces (-n net).
//
// Links are saved as in CRIU: netdev-ID.img holds one NetDeviceEntry per
// link (type, ifindex, MTU, IFF_* flags, name, MAC, the veth's peer
// ifindex); only loopback and veth devices are supported, any other kind
// is refused naming the link. CRIU saves addresses and routes as raw
// "ip addr/route save" netlink dumps; crtools writes them, and the
// crtools' namespace name of each veth's peer, into a JSON image of its
// own, net-ID.json (netImage below), documented here:
//
//	{"addrs":  [{"link": "veth0", "cidr": "198.18.0.2/30"}],
//	 "routes": [{"link": "veth0", "dst": "0.0.0.0/0", "gw": "198.18.0.1",
//	             "scope": 0, "protocol": 4, "priority": 0}],
//	 "peers":  {"veth0": "ctr-out"}}
//
// Routes the kernel makes by itself (protocol kernel: subnet routes of
// addresses, local routes) are not saved: adding the addresses makes them.
//
// Restore clones the root with CLONE_NEWNET, then from crtools: each veth
// is created with its inside end directly in the root's namespace and its
// outside end in crtools' namespace, named by --veth-pair IN=OUT (else the
// dumped peer name); then, from a crtools thread inside the namespace,
// MTU, MAC, addresses, up/down and routes. The outside end is left down
// and unconfigured, as in CRIU: configuring it is the caller's business.
// A failed restore deletes every outside end it created (DeleteLinks).
//
// Sockets are not checkpointed with their namespace: a tree holding a
// socket is refused with -n net (it would be restored in crtools'
// namespace).

// netImage is net-ID.json.
type netImage struct {
	Addrs  []netAddr         `json:"addrs"`
	Routes []netRoute        `json:"routes"`
	Peers  map[string]string `json:"peers,omitempty"`
}

type netAddr struct {
	Link string `json:"link"`
	CIDR string `json:"cidr"`
}

type netRoute struct {
	Link     string `json:"link,omitempty"`
	Dst      string `json:"dst"`
	Gw       string `json:"gw,omitempty"`
	Scope    int    `json:"scope"`
	Protocol int    `json:"protocol"`
	Priority int    `json:"priority"`
}

// netImageName is the file of netImage for namespace id.
func netImageName(id uint32) string { return fmt.Sprintf("net-%d.json", id) }

// netDump is the saved network namespace.
type netDump struct {
	id    uint32
	links []*pb.NetDeviceEntry
	img   netImage
}

// collectNet reads the links, addresses and routes of the network
// namespace of pid. pids are the live tasks of the tree: none may hold a
// socket (socket, Seen.Socket, tells from the caller's descriptors):
// sockets are not restored into the restored network namespace yet.
func collectNet(pid int, pids []int, id uint32, socket func(pid int) (int, string, bool)) (*netDump, error) {
	for _, p := range pids {
		if fd, l, ok := socket(p); ok {
			return nil, fmt.Errorf("task %d holds a socket (fd %d, %s) in the network namespace checkpointed with -n net; sockets inside a checkpointed network namespace: %w", p, fd, l, engine.ErrNotSupported)
		}
	}
	d := &netDump{id: id, img: netImage{Peers: map[string]string{}}}
	peerIdx := map[string]int{}
	err := inNamespace(pid, "net", func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
		for _, l := range links {
			a := l.Attrs()
			e := &pb.NetDeviceEntry{Ifindex: proto.Uint32(uint32(a.Index)), Mtu: proto.Uint32(uint32(a.MTU)),
				Flags: proto.Uint32(a.RawFlags), Name: proto.String(a.Name), Address: []byte(a.HardwareAddr)}
			switch {
			case a.RawFlags&unix.IFF_LOOPBACK != 0:
				e.Type = pb.NdType_LOOPBACK.Enum()
			case l.Type() == "veth":
				e.Type = pb.NdType_VETH.Enum()
				if a.ParentIndex != 0 {
					e.PeerIfindex = proto.Uint32(uint32(a.ParentIndex))
					peerIdx[a.Name] = a.ParentIndex
				}
			default:
				return fmt.Errorf("link %s is of type %s; checkpointing network devices other than loopback and veth: %w", a.Name, l.Type(), engine.ErrNotSupported)
			}
			d.links = append(d.links, e)
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", a.Name, err)
			}
			for _, ad := range addrs {
				if ad.IP.IsLinkLocalUnicast() && ad.IP.To4() == nil {
					continue // fe80::/64: the kernel makes it again
				}
				d.img.Addrs = append(d.img.Addrs, netAddr{Link: a.Name, CIDR: ad.IPNet.String()})
			}
			routes, err := netlink.RouteList(l, netlink.FAMILY_ALL)
			if err != nil {
				return fmt.Errorf("list routes of %s: %w", a.Name, err)
			}
			for _, r := range routes {
				if r.Protocol == unix.RTPROT_KERNEL || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
					continue
				}
				if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() && r.Dst.IP.To4() == nil {
					continue
				}
				nr := netRoute{Link: a.Name, Dst: "default", Scope: int(r.Scope), Protocol: int(r.Protocol), Priority: r.Priority}
				if r.Dst != nil {
					nr.Dst = r.Dst.String()
				}
				if r.Gw != nil {
					nr.Gw = r.Gw.String()
				}
				d.img.Routes = append(d.img.Routes, nr)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read network namespace of pid %d: %w", pid, err)
	}
	// The peers' names, in crtools' namespace (where the outside ends
	// are): restore names the outside end so unless --veth-pair says
	// otherwise. A peer elsewhere keeps no name.
	for in, idx := range peerIdx {
		if l, err := netlink.LinkByIndex(idx); err == nil {
			d.img.Peers[in] = l.Attrs().Name
		}
	}
	return d, nil
}

// write writes netdev-ID.img and net-ID.json into dir.
func (d *netDump) write(dir string) error {
	var ms []proto.Message
	for _, l := range d.links {
		ms = append(ms, l)
	}
	if err := image.WriteFile(dir, image.Netdev, uint64(d.id), ms...); err != nil {
		return fmt.Errorf("write network devices: %w", err)
	}
	b, err := json.MarshalIndent(d.img, "", "  ")
	if err != nil {
		return fmt.Errorf("encode addresses and routes: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, netImageName(d.id)), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write addresses and routes: %w", err)
	}
	return nil
}

// NetRestore is the network namespace to rebuild.
type NetRestore struct {
	links []*pb.NetDeviceEntry
	img   netImage
}

// loadNet reads netdev-ID.img and net-ID.json.
func loadNet(dir string, id uint32) (*NetRestore, error) {
	rd, err := image.Open(dir, image.Netdev, uint64(id))
	if err != nil {
		return nil, fmt.Errorf("open network devices image: %w", err)
	}
	defer rd.Close()
	n := &NetRestore{}
	for {
		e := &pb.NetDeviceEntry{}
		err := rd.Next(e)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read network devices image: %w", err)
		}
		switch e.GetType() {
		case pb.NdType_LOOPBACK, pb.NdType_VETH:
		default:
			return nil, fmt.Errorf("restore network device %s of type %s: %w", e.GetName(), e.GetType(), engine.ErrNotSupported)
		}
		n.links = append(n.links, e)
	}
	b, err := os.ReadFile(filepath.Join(dir, netImageName(id)))
	if err != nil {
		return nil, fmt.Errorf("read addresses and routes: %w", err)
	}
	if err := json.Unmarshal(b, &n.img); err != nil {
		return nil, fmt.Errorf("parse %s: %w", netImageName(id), err)
	}
	return n, nil
}

// outsideName is the name of the outside end of veth in: --veth-pair, else
// the dumped peer's name.
func (n *NetRestore) outsideName(in string, pairs []engine.VethPair) (string, error) {
	for _, p := range pairs {
		if p.Inside == in {
			return p.Outside, nil
		}
	}
	if out := n.img.Peers[in]; out != "" {
		return out, nil
	}
	return "", fmt.Errorf("veth %s: its peer outside has no name in the images; give one with --veth-pair %s=OUTSIDE", in, in)
}

// Apply builds the network namespace of pid (the restored root, in its new
// namespace): veth pairs with their outside ends in crtools' namespace,
// then links, addresses and routes inside. created gets the name of every
// outside end made, for DeleteLinks, as soon as it exists.
func (n *NetRestore) Apply(pid int, pairs []engine.VethPair, created *[]string) error {
	if n == nil {
		return nil
	}
	for _, p := range pairs {
		found := false
		for _, l := range n.links {
			found = found || (l.GetType() == pb.NdType_VETH && l.GetName() == p.Inside)
		}
		if !found {
			return fmt.Errorf("--veth-pair %s=%s: the images have no veth %s", p.Inside, p.Outside, p.Inside)
		}
	}
	for _, l := range n.links {
		if l.GetType() != pb.NdType_VETH {
			continue
		}
		out, err := n.outsideName(l.GetName(), pairs)
		if err != nil {
			return err
		}
		if _, err := netlink.LinkByName(out); err == nil {
			return fmt.Errorf("create veth %s=%s: a link named %s exists already in crtools' network namespace (choose another with --veth-pair %s=NAME)", l.GetName(), out, out, l.GetName())
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.GetName(), MTU: int(l.GetMtu()),
			HardwareAddr: net.HardwareAddr(l.GetAddress()), Namespace: netlink.NsPid(pid)}, PeerName: out}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("create veth %s (outside end %s): %w", l.GetName(), out, err)
		}
		*created = append(*created, out)
	}
	return inNamespace(pid, "net", func() error {
		byName := map[string]netlink.Link{}
		for _, e := range n.links {
			l, err := netlink.LinkByName(e.GetName())
			if err != nil {
				return fmt.Errorf("find link %s: %w", e.GetName(), err)
			}
			byName[e.GetName()] = l
			if l.Attrs().MTU != int(e.GetMtu()) {
				if err := netlink.LinkSetMTU(l, int(e.GetMtu())); err != nil {
					return fmt.Errorf("set MTU of %s to %d: %w", e.GetName(), e.GetMtu(), err)
				}
			}
			if e.GetType() == pb.NdType_VETH && len(e.GetAddress()) == 6 && l.Attrs().HardwareAddr.String() != net.HardwareAddr(e.GetAddress()).String() {
				if err := netlink.LinkSetHardwareAddr(l, e.GetAddress()); err != nil {
					return fmt.Errorf("set MAC of %s: %w", e.GetName(), err)
				}
			}
		}
		for _, a := range n.img.Addrs {
			l := byName[a.Link]
			if l == nil {
				return fmt.Errorf("address %s: no link %s in the images", a.CIDR, a.Link)
			}
			ad, err := netlink.ParseAddr(a.CIDR)
			if err != nil {
				return fmt.Errorf("parse address %s of %s: %w", a.CIDR, a.Link, err)
			}
			if err := netlink.AddrReplace(l, ad); err != nil {
				return fmt.Errorf("add address %s to %s: %w", a.CIDR, a.Link, err)
			}
		}
		for _, e := range n.links {
			if e.GetFlags()&unix.IFF_UP == 0 {
				continue
			}
			if err := netlink.LinkSetUp(byName[e.GetName()]); err != nil {
				return fmt.Errorf("set %s up: %w", e.GetName(), err)
			}
		}
		for _, r := range n.img.Routes {
			nr := &netlink.Route{Scope: netlink.Scope(r.Scope), Protocol: netlink.RouteProtocol(r.Protocol), Priority: r.Priority}
			if l := byName[r.Link]; l != nil {
				nr.LinkIndex = l.Attrs().Index
			}
			if r.Dst != "default" {
				_, dst, err := net.ParseCIDR(r.Dst)
				if err != nil {
					return fmt.Errorf("parse route destination %s: %w", r.Dst, err)
				}
				nr.Dst = dst
			}
			if r.Gw != "" {
				nr.Gw = net.ParseIP(r.Gw)
			}
			if err := netlink.RouteReplace(nr); err != nil {
				return fmt.Errorf("add route to %s via %q dev %s: %w", r.Dst, r.Gw, r.Link, err)
			}
		}
		return nil
	})
}

// DeleteLinks deletes the outside ends of veth pairs a failed restore made
// (the inside end goes with each). Links already gone are not an error.
func DeleteLinks(names []string) error {
	var errs []error
	for i := len(names) - 1; i >= 0; i-- {
		l, err := netlink.LinkByName(names[i])
		if err != nil {
			continue // gone with its namespace
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", names[i], err))
		}
	}
	return errors.Join(errs...)
}
