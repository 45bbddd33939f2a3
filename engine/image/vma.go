package image

// VMA status bits of vma_entry.status (CRIU's VMA_* of criu/include/image.h).
// Restore decides how to map an area from these, so dump must set them as
// CRIU does.
const (
	VMAAreaRegular  = 1 << 0 // an area to dump and restore
	VMAAreaStack    = 1 << 1
	VMAAreaVsyscall = 1 << 2
	VMAAreaVDSO     = 1 << 3
	VMAAreaHeap     = 1 << 5
	VMAFilePrivate  = 1 << 6
	VMAFileShared   = 1 << 7
	VMAAnonShared   = 1 << 8
	VMAAnonPrivate  = 1 << 9
	VMAAreaSysVIPC  = 1 << 10
	VMAAreaSocket   = 1 << 11
	VMAAreaVVAR     = 1 << 12
	VMAAreaAIORing  = 1 << 13
	VMAAreaMemfd    = 1 << 14
	VMAAreaShstk    = 1 << 15
	VMAExtPlugin    = 1 << 27
	VMAClose        = 1 << 28
	VMANoProtWrite  = 1 << 29
	VMAPremmaped    = 1 << 30
	VMAAreaUnsupp   = 1 << 31
)

// VMAStatusNames names the VMA status bits, lowest first.
var VMAStatusNames = []struct {
	Bit  uint32
	Name string
}{
	{VMAAreaRegular, "REGULAR"}, {VMAAreaStack, "STACK"}, {VMAAreaVsyscall, "VSYSCALL"},
	{VMAAreaVDSO, "VDSO"}, {VMAAreaHeap, "HEAP"}, {VMAFilePrivate, "FILE_PRIVATE"},
	{VMAFileShared, "FILE_SHARED"}, {VMAAnonShared, "ANON_SHARED"}, {VMAAnonPrivate, "ANON_PRIVATE"},
	{VMAAreaSysVIPC, "SYSVIPC"}, {VMAAreaSocket, "SOCKET"}, {VMAAreaVVAR, "VVAR"},
	{VMAAreaAIORing, "AIORING"}, {VMAAreaMemfd, "MEMFD"}, {VMAAreaShstk, "SHSTK"},
	{VMAExtPlugin, "EXT_PLUGIN"}, {VMAClose, "CLOSE"}, {VMANoProtWrite, "NO_PROT_WRITE"},
	{VMAPremmaped, "PREMMAPED"}, {VMAAreaUnsupp, "UNSUPP"},
}
