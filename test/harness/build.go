package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// modulePath is the module whose root RepoRoot looks for.
const modulePath = "github.com/crtools/crtools"

var (
	repoRootOnce sync.Once
	repoRoot     string
	repoRootErr  error
)

// RepoRoot returns the root of the crtools source tree: the nearest parent
// of the current directory (a test runs in its package directory) whose
// go.mod declares the crtools module.
func RepoRoot() (string, error) {
	repoRootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			repoRootErr = fmt.Errorf("get working directory: %w", err)
			return
		}
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && strings.Contains(firstLine(string(data)), modulePath) {
				repoRoot = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				repoRootErr = fmt.Errorf("find go.mod of %s above the working directory", modulePath)
				return
			}
			dir = parent
		}
	})
	return repoRoot, repoRootErr
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// WorkloadsDir returns test/workloads of the source tree.
func WorkloadsDir(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "test", "workloads")
}

// cacheDir is where built binaries are kept, named by the hash of what went
// into them, so that tests (and test binaries of other packages) share one
// build. Entries are written to a temporary name and renamed into place.
func cacheDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("crtools-harness-%d", os.Geteuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create build cache %s: %w", dir, err)
	}
	pruneOnce.Do(func() { pruneCache(dir) })
	return dir, nil
}

var pruneOnce sync.Once

// cacheMaxAge is how long an unused cache entry is kept. Entries are
// touched when used, and tests get hard links (or copies), so removing an
// entry never pulls a binary from under a running test.
const cacheMaxAge = 3 * 24 * time.Hour

// pruneCache removes entries nobody used for cacheMaxAge, and build
// directories that a killed build left behind.
func pruneCache(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	now := time.Now()
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		age := now.Sub(info.ModTime())
		stale := age > cacheMaxAge
		if e.IsDir() && (strings.HasPrefix(e.Name(), "build-") || strings.HasPrefix(e.Name(), "crtools-")) {
			stale = age > time.Hour
		}
		if stale {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// touch marks a cache entry as used now.
func touch(path string) {
	now := time.Now()
	_ = os.Chtimes(path, now, now)
}

// buildLocks serializes builds of one cache entry inside this process.
var buildLocks sync.Map // key -> *sync.Mutex

func lockKey(key string) func() {
	m, _ := buildLocks.LoadOrStore(key, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// cached returns the cache path for key, calling build(tmpPath) to create it
// when it is not there yet.
func cached(key string, build func(out string) error) (string, error) {
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	final := filepath.Join(dir, key)
	unlock := lockKey(key)
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		touch(final)
		return final, nil
	}
	tmpDir, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	out := filepath.Join(tmpDir, "out")
	if err := build(out); err != nil {
		return "", err
	}
	if err := os.Rename(out, final); err != nil {
		return "", fmt.Errorf("move %s into the build cache: %w", key, err)
	}
	return final, nil
}

// placeCopy puts a copy of the cached binary at dir/name (a hard link when
// possible) so that every test has an executable of its own that lives as
// long as the test.
func placeCopy(t testing.TB, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.Link(src, dst); err == nil {
		return dst
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("open %s: %v", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatalf("create %s: %v", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", dst, err)
	}
	return dst
}

// BuildC compiles a C workload with gcc (-O1 -g -pthread plus extraFlags)
// and returns the path of the executable, inside t.TempDir(). src is a file
// name in test/workloads ("simple.c") or a path. The build is cached by the
// hash of the source, crt.h, the flags and the compiler version.
func BuildC(t testing.TB, src string, extraFlags ...string) string {
	t.Helper()
	if !filepath.IsAbs(src) && !strings.ContainsRune(src, os.PathSeparator) {
		src = filepath.Join(WorkloadsDir(t), src)
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		skipOrFail(t, "gcc is not installed (apt-get install gcc; .ci/run does it)")
	}
	code, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read workload source: %v", err)
	}
	h := sha256.New()
	h.Write(code)
	// The headers next to the source (crt.h of the workloads, report.h
	// of test/e2e/testdata) are part of what is built.
	hdrs, _ := filepath.Glob(filepath.Join(filepath.Dir(src), "*.h"))
	for _, p := range hdrs {
		if hdr, err := os.ReadFile(p); err == nil {
			h.Write(hdr)
		}
	}
	flags := append([]string{"-O1", "-g", "-pthread", "-Wall"}, extraFlags...)
	fmt.Fprintf(h, "\x00%q", flags)
	if ver, err := exec.Command(gcc, "-dumpfullversion").Output(); err == nil {
		h.Write(ver)
	}
	base := strings.TrimSuffix(filepath.Base(src), ".c")
	key := base + "-" + hex.EncodeToString(h.Sum(nil))[:16]
	bin, err := cached(key, func(out string) error {
		args := append(append([]string{}, flags...), "-o", out, src, "-lrt")
		cmd := exec.Command(gcc, args...)
		cmd.Dir = filepath.Dir(src)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("build %s: %v", src, err)
	}
	return placeCopy(t, bin, base)
}

// goTool finds the go command: on PATH, else next to this binary's GOROOT.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("find the go command: not on PATH and not in %s", filepath.Dir(p))
	}
	return p, nil
}

// hashTree hashes the names and contents of the files under dir.
func hashTree(dir string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("walk %s: %w", dir, err)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", f, err)
		}
		rel, err := filepath.Rel(dir, f)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// BuildGo builds the Go program in pkgDir (a directory under
// test/workloads such as "gowork", or a path) without cgo, and returns the
// path of the executable inside t.TempDir().
func BuildGo(t testing.TB, pkgDir string) string {
	t.Helper()
	if !filepath.IsAbs(pkgDir) && !strings.ContainsRune(pkgDir, os.PathSeparator) {
		pkgDir = filepath.Join(WorkloadsDir(t), pkgDir)
	}
	goBin, err := goTool()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := hashTree(pkgDir)
	if err != nil {
		t.Fatalf("build %s: %v", pkgDir, err)
	}
	base := filepath.Base(pkgDir)
	bin, err := cached(base+"-go-"+sum, func(out string) error {
		cmd := exec.Command(goBin, "build", "-o", out, ".")
		cmd.Dir = pkgDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build in %s: %w\n%s", pkgDir, err, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("build %s: %v", pkgDir, err)
	}
	return placeCopy(t, bin, base)
}

var (
	crtoolsOnce sync.Once
	crtoolsBin  string
	crtoolsErr  error
)

// BuildCrtools builds ./cmd/crtools once per test binary and returns the
// path of the executable. It lives in the shared build cache (named by the
// hash of its contents), not in a test's temporary directory, because
// images may name it and it must outlive single tests.
func BuildCrtools(t testing.TB) string {
	t.Helper()
	crtoolsOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			crtoolsErr = err
			return
		}
		goBin, err := goTool()
		if err != nil {
			crtoolsErr = err
			return
		}
		dir, err := cacheDir()
		if err != nil {
			crtoolsErr = err
			return
		}
		tmp, err := os.MkdirTemp(dir, "crtools-")
		if err != nil {
			crtoolsErr = fmt.Errorf("create build dir: %w", err)
			return
		}
		defer os.RemoveAll(tmp)
		out := filepath.Join(tmp, "crtools")
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/crtools")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			crtoolsErr = fmt.Errorf("go build ./cmd/crtools: %w\n%s", err, b)
			return
		}
		sum, err := hashTree(tmp)
		if err != nil {
			crtoolsErr = err
			return
		}
		final := filepath.Join(dir, "crtools-"+sum)
		if _, err := os.Stat(final); err != nil {
			if err := os.Rename(out, final); err != nil {
				crtoolsErr = fmt.Errorf("move crtools into the build cache: %w", err)
				return
			}
		} else {
			touch(final)
		}
		crtoolsBin = final
	})
	if crtoolsErr != nil {
		t.Fatalf("build crtools: %v", crtoolsErr)
	}
	return crtoolsBin
}

// Python3 returns the python3 interpreter to run Python workloads with:
// Debian's /usr/bin/python3 when it is there (wrappers such as pyenv's
// shims are shell scripts that exec the real interpreter, which is not
// what a test wants to dump), else python3 from PATH.
func Python3(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		skipOrFail(t, "python3 is not installed (apt-get install python3; .ci/run does it)")
	}
	return p
}

// WorkloadFile returns the path of a workload file in test/workloads (such as
// "pywork.py"), failing the test if it does not exist.
func WorkloadFile(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(WorkloadsDir(t), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("workload %s: %v", name, err)
	}
	return p
}
