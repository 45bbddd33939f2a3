package ns

import "golang.org/x/sys/unix"

// Kernel ABI of SysV IPC on x86-64 (include/uapi/linux/{ipc,msg,sem,shm}.h,
// asm-generic/msgbuf.h, arch/x86/include/uapi/asm/sembuf.h). The *ctl
// calls of a 64-bit kernel always use the 64-bit structures (no IPC_64).
// shmctl's shmid64_ds is x/sys/unix's SysvShmDesc.

// msqidDS is struct msqid64_ds (120 bytes).
type msqidDS struct {
	Perm   unix.SysvIpcPerm
	Stime  int64
	Rtime  int64
	Ctime  int64
	Cbytes uint64
	Qnum   uint64
	Qbytes uint64
	Lspid  int32
	Lrpid  int32
	_      [2]uint64
}

// semidDS is struct semid64_ds (104 bytes).
type semidDS struct {
	Perm  unix.SysvIpcPerm
	Otime int64
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     [2]uint64
}

// Commands and flags of the *ctl and msgrcv calls.
const (
	ipcStat   = 2
	ipcSet    = 1
	shmLock   = 11
	shmStat   = 13
	shmInfo   = 14
	msgStat   = 11
	msgInfo   = 12
	semStat   = 18
	semInfo   = 19
	semGETALL = 13
	semSETALL = 17
	msgCopy   = 0o40000 // msgrcv: copy the message at index msgtyp, leave it queued
	ipcNowait = 0o4000
	ipcCreat  = 0o1000
	ipcExcl   = 0o2000

	// Bits of ipc_perm.mode besides the permissions.
	shmDest   = 0o1000 // removed (IPC_RMID), lives while attached
	shmLocked = 0o2000 // SHM_LOCK
)
