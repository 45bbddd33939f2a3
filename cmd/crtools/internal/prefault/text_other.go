//go:build !(linux && amd64)

package prefault

// hugeText is only on linux/amd64 (text.go): elsewhere the binary stays
// mapped from its file.
func hugeText(maps []byte, binPath string, fd int, h []byte) int { return 0 }
