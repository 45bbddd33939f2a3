package restore

import (
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/testenv"
)

// BenchmarkPuppetSyscall measures one injected syscall through the
// trampoline (SETREGS, CONT, wait for the int3, PEEKUSER rax), with the
// tracer and the puppet on one CPU (as restore runs them) or free.
func BenchmarkPuppetSyscall(b *testing.B) {
	testenv.RequireRoot(b, "restore (clone3 with set_tid, ptrace)")
	for _, pinned := range []bool{true, false} {
		name := "unpinned"
		if pinned {
			name = "pinned"
		}
		b.Run(name, func(b *testing.B) {
			pid := freePid(b)
			task := &taskImage{pid: pid, tids: []int{pid}, mm: &pb.MmEntry{}}
			r := &restorer{opts: engine.RestoreOptions{}, log: zerolog.Nop(), noPin: !pinned,
				img: &imageSet{tasks: []*taskImage{task}, files: map[uint32]*pb.FileEntry{}}}
			defer r.Close()
			if err := r.CreateTasks(b.Context()); err != nil {
				b.Fatal(err)
			}
			p := r.procs[0].threads[0]
			b.ResetTimer()
			err := r.tr.Do(func() error {
				for i := 0; i < b.N; i++ {
					if _, err := p.call(unix.SYS_GETPID); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			_ = r.Kill()
		})
	}
}
