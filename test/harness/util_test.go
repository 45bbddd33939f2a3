package harness

import (
	"fmt"
	"strconv"
)

func fmtSscan(s string, n *int) (int, error) { return fmt.Sscan(s, n) }

func itoa(n int) string { return strconv.Itoa(n) }
