package files

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// Images. The entries of Set.Files belong in files.img, which the dump
// engine writes together with its own entries; WriteImages writes the rest
// in CRIU's files:
//
//	pipes-data.img, fifo-data.img  PipeDataEntry + the bytes
//	sk-queues.img                  SkPacketEntry + the message
//	remap-fpath.img                RemapFilePathEntry (GHOST or LINKED)
//	ghost-file-<id>.img            GhostFileEntry + the contents
//	file-locks.img, tty-info.img
//	tcp-stream-<inode>.img         TcpStreamEntry + receive queue + send queue
//
// A link-remapped file is, as in CRIU, a REG entry for the hidden name
// (added to Set.Files at dump time) named by remap_id. The order of pending
// connections (Set.Icons) has no place in CRIU's images: after a round trip
// restore connects them in file-id order.

// WriteImages writes the extra images of set into dir.
func WriteImages(dir string, set *Set) error {
	fifoPipes := map[uint32]bool{}
	for _, e := range set.Files {
		if f := e.GetFifo(); f != nil {
			fifoPipes[f.GetPipeId()] = true
		}
	}
	var pipeIDs []uint32
	for id := range set.PipeData {
		pipeIDs = append(pipeIDs, id)
	}
	sort.Slice(pipeIDs, func(i, j int) bool { return pipeIDs[i] < pipeIDs[j] })
	for _, k := range []*image.Kind{image.PipesData, image.FifoData} {
		var w *image.Writer
		for _, id := range pipeIDs {
			if fifoPipes[id] != (k == image.FifoData) {
				continue
			}
			pd := set.PipeData[id]
			var err error
			if w == nil {
				if w, err = image.Create(dir, k, 0); err != nil {
					return err
				}
				defer w.Close()
			}
			if err = w.Write(pd.Entry); err == nil {
				err = w.WriteExtra(pd.Data)
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", k, err)
			}
		}
		if w != nil {
			if err := w.Close(); err != nil {
				return fmt.Errorf("close %s: %w", k, err)
			}
		}
	}

	if len(set.Queues) > 0 {
		var ids []uint32
		for id := range set.Queues {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		w, err := image.Create(dir, image.SkQueues, 0)
		if err != nil {
			return err
		}
		defer w.Close()
		for _, id := range ids {
			for _, p := range set.Queues[id] {
				if err := w.Write(p.Entry); err != nil {
					return fmt.Errorf("write socket queue of file %d: %w", id, err)
				}
				if err := w.WriteExtra(p.Data); err != nil {
					return fmt.Errorf("write socket queue of file %d: %w", id, err)
				}
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}

	var remaps []proto.Message
	ghostIDs := map[*Ghost]uint32{}
	var ids []uint32
	for id := range set.Ghosts {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		g := set.Ghosts[id]
		gid, ok := ghostIDs[g]
		if !ok {
			gid = uint32(len(ghostIDs) + 1)
			ghostIDs[g] = gid
			w, err := image.Create(dir, image.GhostFile, uint64(gid))
			if err != nil {
				return err
			}
			if err = w.Write(g.Entry); err == nil {
				err = w.WriteExtra(g.Data)
			}
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write ghost file %d: %w", gid, err)
			}
		}
		t := pb.RemapType_GHOST
		remaps = append(remaps, &pb.RemapFilePathEntry{OrigId: u32p(id), RemapId: u32p(gid), RemapType: &t})
	}
	ids = ids[:0]
	for id := range set.LinkRemaps {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		rid, ok := set.linkRemapIDs[id]
		if !ok {
			return fmt.Errorf("write remap-fpath: link remap of file %d has no entry for its hidden name", id)
		}
		t := pb.RemapType_LINKED
		remaps = append(remaps, &pb.RemapFilePathEntry{OrigId: u32p(id), RemapId: u32p(rid), RemapType: &t})
	}
	if len(remaps) > 0 {
		if err := image.WriteFile(dir, image.RemapFpath, 0, remaps...); err != nil {
			return err
		}
	}
	if len(set.Locks) > 0 {
		var m []proto.Message
		for _, l := range set.Locks {
			m = append(m, l)
		}
		if err := image.WriteFile(dir, image.FileLocks, 0, m...); err != nil {
			return err
		}
	}
	if err := writeTCPStreams(dir, set); err != nil {
		return err
	}
	if len(set.TtyInfo) > 0 {
		var tids []uint32
		for id := range set.TtyInfo {
			tids = append(tids, id)
		}
		sort.Slice(tids, func(i, j int) bool { return tids[i] < tids[j] })
		var m []proto.Message
		for _, id := range tids {
			m = append(m, set.TtyInfo[id])
		}
		if err := image.WriteFile(dir, image.TTYInfo, 0, m...); err != nil {
			return err
		}
	}
	return writeTtyData(dir, set) // tty.go
}

// ReadImages reads the extra images from dir into a Set whose Files are
// files (the entries of files.img).
func ReadImages(dir string, files []*pb.FileEntry) (*Set, error) {
	set := NewSet()
	set.Files = files
	byID := map[uint32]*pb.FileEntry{}
	for _, e := range files {
		byID[e.GetId()] = e
	}
	read := func(k *image.Kind, id uint64) ([]*image.Entry, error) {
		if !image.Exists(dir, k, id) {
			return nil, nil
		}
		return image.ReadFile(dir, k, id)
	}
	for _, k := range []*image.Kind{image.PipesData, image.FifoData} {
		es, err := read(k, 0)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			pd := e.Msg.(*pb.PipeDataEntry)
			set.PipeData[pd.GetPipeId()] = &PipeData{Entry: pd, Data: e.Payload}
		}
	}
	es, err := read(image.SkQueues, 0)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		p := e.Msg.(*pb.SkPacketEntry)
		set.Queues[p.GetIdFor()] = append(set.Queues[p.GetIdFor()], &Packet{Entry: p, Data: e.Payload})
	}
	if es, err = read(image.RemapFpath, 0); err != nil {
		return nil, err
	}
	ghosts := map[uint32]*Ghost{}
	for _, e := range es {
		r := e.Msg.(*pb.RemapFilePathEntry)
		switch r.GetRemapType() {
		case pb.RemapType_GHOST:
			g, ok := ghosts[r.GetRemapId()]
			if !ok {
				ge, err := image.ReadFile(dir, image.GhostFile, uint64(r.GetRemapId()))
				if err != nil {
					return nil, err
				}
				if len(ge) != 1 {
					return nil, fmt.Errorf("ghost file %d: %d entries, want 1", r.GetRemapId(), len(ge))
				}
				if len(ge[0].Chunks) > 0 {
					return nil, fmt.Errorf("ghost file %d: chunked contents: %w", r.GetRemapId(), ErrUnsupported)
				}
				g = &Ghost{Entry: ge[0].Msg.(*pb.GhostFileEntry), Data: ge[0].Payload}
				ghosts[r.GetRemapId()] = g
			}
			set.Ghosts[r.GetOrigId()] = g
		case pb.RemapType_LINKED:
			hidden := byID[r.GetRemapId()].GetReg()
			if hidden == nil {
				return nil, fmt.Errorf("link remap of file %d: file %d: %w", r.GetOrigId(), r.GetRemapId(), errNoEntry)
			}
			set.LinkRemaps[r.GetOrigId()] = hidden.GetName()
		default:
			return nil, fmt.Errorf("remap of file %d of type %v: %w", r.GetOrigId(), r.GetRemapType(), ErrUnsupported)
		}
	}
	if es, err = read(image.FileLocks, 0); err != nil {
		return nil, err
	}
	for _, e := range es {
		set.Locks = append(set.Locks, e.Msg.(*pb.FileLockEntry))
	}
	if err := readTCPStreams(dir, set); err != nil {
		return nil, err
	}
	if es, err = read(image.TTYInfo, 0); err != nil {
		return nil, err
	}
	for _, e := range es {
		t := e.Msg.(*pb.TtyInfoEntry)
		set.TtyInfo[t.GetId()] = t
	}
	if err := readTtyData(dir, set); err != nil { // tty.go
		return nil, err
	}
	return set, nil
}
