package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/executor"
)

// runCLI runs crtools in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestHelpListsCommands: `crtools --help` lists every command of the man
// page and the job commands.
func TestHelpListsCommands(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, c := range []string{"dump", "restore", "show", "check", "page-server", "exec", "apply", "plan", "validate"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("--help does not list %q:\n%s", c, out)
		}
	}
}

// TestDumpHelpListsManOptions: `crtools dump --help` lists every dump
// option of the man page by its long name, each with an explanation.
func TestDumpHelpListsManOptions(t *testing.T) {
	code, out, _ := runCLI(t, "dump", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, o := range []string{"-D, --images-dir", "-s, --leave-stopped", "-R, --leave-running", "-x, --ext-unix-sk",
		"-t, --tree", "-n, --namespaces", "-r, --root", "--evasive-devices", "--action-script", "--link-remap",
		"-o, --log-file", "-v, --verbosity", "--log-pid", "--log-format", "--close", "--tcp-established",
		"-j, --shell-job", "-l, --file-locks", "--page-server", "--address", "--port", "-V, --version", "-h, --help"} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, o+" ") && len(strings.Fields(line)) > 3 {
				found = true
			}
		}
		if !found {
			t.Errorf("dump --help lacks %q with an explanation", o)
		}
	}
	_, out, _ = runCLI(t, "restore", "--help")
	for _, o := range []string{"-d, --restore-detached", "--veth-pair", "-t, --tree", "-D, --images-dir"} {
		if !strings.Contains(out, o) {
			t.Errorf("restore --help lacks %q", o)
		}
	}
}

// TestUsageErrors: unknown commands and options, missing or malformed
// arguments give one line naming the problem, a usage hint, exit 2.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
		hint string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, "Run 'crtools --help'."},
		{[]string{"dump", "--bogus"}, "unknown flag: --bogus", "Run 'crtools dump --help'."},
		{[]string{"dump", "-Z"}, "unknown shorthand flag: 'Z'", "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "abc", "-D", "x"}, `invalid argument "abc" for "-t, --tree" flag: expected a process ID`, "Run 'crtools dump --help'."},
		{[]string{"-t", "abc", "dump"}, `invalid argument "abc" for "-t, --tree"`, "Run 'crtools dump --help'."},
		{[]string{"restore", "--veth-pair", "x"}, `invalid argument "x" for "--veth-pair" flag: expected IN=OUT`, "Run 'crtools restore --help'."},
		{[]string{"dump", "--page-server", "--address", "h", "--port", "99999", "-t", "1", "-D", "d"}, `invalid argument "99999" for "--port" flag: expected a port number`, "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "1", "-D", "d", "--ghost-limit", "3Q"}, `invalid argument "3Q" for "--ghost-limit" flag: expected a size in bytes`, "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "1", "-D", "d", "--ghost-limit", "0"}, `invalid argument "0" for "--ghost-limit" flag: expected a size in bytes greater than 0`, "Run 'crtools dump --help'."},
		{[]string{"dump", "-D", "d"}, "dump needs -t/--tree PID", "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "1"}, "dump needs -D/--images-dir DIR", "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "1", "-D", "d", "-s", "-R"}, "exclude each other", "Run 'crtools dump --help'."},
		{[]string{"dump", "-t"}, "flag needs an argument", "Run 'crtools dump --help'."},
		{[]string{"dump", "-t", "1", "-D", "d", "-n", "uts,user"}, `unknown namespace "user"`, "Run 'crtools dump --help'."},
		{[]string{"-v", "7", "dump"}, "expected a log level 0, 1 or 2", "Run 'crtools dump --help'."},
		{[]string{"--log-format", "xml", "restore"}, "expected one of text, json", "Run 'crtools restore --help'."},
		{[]string{"dump", "-t", "1", "-D", "d", "extra"}, `unknown command "extra"`, "Run 'crtools dump --help'."},
		{[]string{}, "no command given", "Run 'crtools --help'."},
		{[]string{"apply"}, "accepts 1 arg(s)", "Run 'crtools apply --help'."},
		{[]string{"-D", "x", "apply", "job.yaml"}, "-D/--images-dir does not apply to apply", "Run 'crtools apply --help'."},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			code, _, errs := runCLI(t, c.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want 2; stderr %q", code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], c.want) || lines[1] != c.hint {
				t.Errorf("stderr %q, want one line with %q then %q", errs, c.want, c.hint)
			}
		})
	}
}

// TestReorderArgs: options may stand before the command.
func TestReorderArgs(t *testing.T) {
	root := newRootCommand(&globalOptions{})
	cases := []struct{ in, want string }{
		{"-D d -t 5 dump", "dump -D d -t 5"},
		{"dump -D d -t 5", "dump -D d -t 5"},
		{"-v 2 -o log restore -d", "restore -v 2 -o log -d"},
		{"-sD d -t 5 dump", "dump -sD d -t 5"},
		{"-t5 -D dump dump", "dump -t5 -D dump"}, // "dump" after -D is its value
		{"--images-dir dump -t 1 dump", "dump --images-dir dump -t 1"},
		{"--images-dir=x -R dump", "dump --images-dir=x -R"},
		{"--log-pid dump -t 1 -D d", "dump --log-pid -t 1 -D d"},
		{"-- dump", "-- dump"},
		{"frob -D d", "frob -D d"},
	}
	for _, c := range cases {
		got := strings.Join(reorderArgs(root, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("reorder %q = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestRootFor: a command word first builds that command alone, under its
// registered name; anything else builds the whole tree. Both give the
// same args as reorderArgs on the whole tree.
func TestRootFor(t *testing.T) {
	for _, f := range commandFactories {
		if got := f.make(&globalOptions{}).Name(); got != f.name {
			t.Errorf("command registered as %q is named %q", f.name, got)
		}
	}
	full := newRootCommand(&globalOptions{})
	for _, in := range []string{"dump -D d -t 5", "restore -d -v 2", "-D d -t 5 dump", "check --help", "help", "frob -D d", "", "-V"} {
		args := strings.Fields(in)
		root, got := rootFor(&globalOptions{}, args)
		if want := reorderArgs(full, args); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("rootFor(%q) args %q, want %q", in, got, want)
		}
		n := len(root.Commands())
		if len(args) > 0 && (args[0] == "dump" || args[0] == "restore" || args[0] == "check") {
			if n != 1 || root.Commands()[0].Name() != args[0] {
				t.Errorf("rootFor(%q) built %d commands, want %s alone", in, n, args[0])
			}
		} else if n != len(commandFactories) {
			t.Errorf("rootFor(%q) built %d commands, want all %d", in, n, len(commandFactories))
		}
	}
}

// TestOptionsBeforeCommandSameJob: both orders build the same job.
func TestOptionsBeforeCommandSameJob(t *testing.T) {
	build := func(args ...string) string {
		g := &globalOptions{}
		root := newRootCommand(g)
		args = reorderArgs(root, args)
		cmd, rest, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Fatal(err)
		}
		f := &dumpFlags{}
		// Re-read the parsed values through the command's flags.
		f.Tree, _ = cmd.Flags().GetInt("tree")
		if v := cmd.Flags().Lookup("tree"); v != nil {
			fmt.Sscan(v.Value.String(), &f.Tree)
		}
		f.LeaveRunning, _ = cmd.Flags().GetBool("leave-running")
		j, err := dumpJob(g, f, cmd)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(j)
		return string(b)
	}
	a := build("-D", "/tmp/d", "-t", "5", "-R", "dump")
	b := build("dump", "-D", "/tmp/d", "-t", "5", "-R")
	if a != b || !strings.Contains(a, `"pid":5`) || !strings.Contains(a, `"leaveRunning":true`) {
		t.Errorf("jobs differ or wrong:\n%s\n%s", a, b)
	}
}

func TestVersion(t *testing.T) {
	for _, a := range [][]string{{"-V"}, {"--version"}, {"dump", "-V"}} {
		code, out, _ := runCLI(t, a...)
		if code != 0 || !strings.HasPrefix(out, "Version: ") {
			t.Errorf("%v: exit %d out %q", a, code, out)
		}
	}
}

// TestValidateCommand: valid files pass; a bad one exits 2 with
// file:line:column lines.
func TestValidateCommand(t *testing.T) {
	code, out, errs := runCLI(t, "validate", filepath.Join("..", "..", "examples", "demo.yaml"))
	if code != 0 || !strings.Contains(out, `Checkpoint "demo-checkpoint" is valid`) || !strings.Contains(out, `Restore "demo-restore" is valid`) {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: x}\nspec:\n  target: {pid: 1}\n  imagesDir: /x\n  leaveRuning: true\n  retention: {keepLast: 0}\n"), 0o644)
	code, _, errs = runCLI(t, "validate", bad)
	if code != exitUsage {
		t.Fatalf("exit %d", code)
	}
	for _, w := range []string{bad + `:7:3: spec.leaveRuning: unknown field "leaveRuning"`, bad + ":8:25: spec.retention.keepLast: expected at least 1, got 0"} {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errs)
		}
	}
}

// TestPlanCommand: numbered steps, --json, and "not supported yet".
func TestPlanCommand(t *testing.T) {
	ex := filepath.Join("..", "..", "examples", "cron-snapshots.yaml")
	code, out, _ := runCLI(t, "plan", ex)
	if code != 0 || !strings.Contains(out, " 1. lock ") || !strings.Contains(out, "10. unlock") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "plan", "--json", ex)
	var plans []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &plans) != nil || len(plans) != 1 || plans[0]["name"] != "long-computation" {
		t.Fatalf("--json: exit %d:\n%s", code, out)
	}
	// A valid field whose engine does not exist yet fails at plan time.
	nl := filepath.Join(t.TempDir(), "nl.yaml")
	os.WriteFile(nl, []byte("apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: x}\nspec:\n  target: {pid: 1}\n  imagesDir: /x\n  hooks: {networkLock: [\"true\"]}\n"), 0o644)
	code, _, errs := runCLI(t, "plan", nl)
	if code != exitFailed || !strings.Contains(errs, "spec.hooks.networkLock: locking the network (network-lock hooks) is not supported yet") {
		t.Errorf("network lock: exit %d: %s", code, errs)
	}
	code, _, errs = runCLI(t, "dump", "-t", "1", "-D", t.TempDir()+"/x", "-r", "/")
	if code != exitFailed || !strings.Contains(errs, "not supported yet") {
		t.Errorf("dump -r: exit %d: %s", code, errs)
	}
}

// fakeEngine replaces the dump engine for CLI tests; it logs through the
// per-pid logger like the real one would.
type fakeDumper struct {
	opts engine.DumpOptions
	hold time.Duration
}

func (d *fakeDumper) Freeze(ctx context.Context) error {
	if d.opts.PidLog != nil {
		l := d.opts.PidLog(d.opts.Pid)
		l.Info().Msg("seized")
	}
	time.Sleep(d.hold)
	return nil
}
func (d *fakeDumper) Collect(ctx context.Context) error { return nil }
func (d *fakeDumper) WriteImages(ctx context.Context, dir string) error {
	return os.WriteFile(filepath.Join(dir, "inventory.img"), []byte("x"), 0o644)
}
func (d *fakeDumper) Resume() error                  { return nil }
func (d *fakeDumper) Finish(engine.FinishMode) error { return nil }
func (d *fakeDumper) Pids() []int                    { return []int{d.opts.Pid} }
func (d *fakeDumper) Close() error                   { return nil }

var engineMu sync.Mutex

func withFakeDumper(t *testing.T, hold time.Duration) {
	engineMu.Lock()
	saved := engine.NewDumper
	engine.NewDumper = func(o engine.DumpOptions) (engine.Dumper, error) { return &fakeDumper{opts: o, hold: hold}, nil }
	t.Cleanup(func() { engine.NewDumper = saved; engineMu.Unlock() })
	t.Setenv(lockDirEnv, t.TempDir())
}

func sleeper(t *testing.T) int {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// TestDumpLogFiles: -o with a relative path ends up inside the images
// directory, --log-pid adds FILE.PID, lines carry a relative timestamp.
func TestDumpLogFiles(t *testing.T) {
	withFakeDumper(t, 0)
	pid := sleeper(t)
	dir := filepath.Join(t.TempDir(), "ckpt")
	code, _, errs := runCLI(t, "-o", "dump.log", "--log-pid", "-v", "2", "-R", "-t", fmt.Sprint(pid), "-D", dir, "dump")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	main, err := os.ReadFile(filepath.Join(dir, "dump.log"))
	if err != nil {
		t.Fatalf("main log not in images dir: %v", err)
	}
	if !strings.HasPrefix(string(main), "(00.0") || !strings.Contains(string(main), "D: step done") {
		t.Errorf("main log:\n%s", main)
	}
	per, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("dump.log.%d", pid)))
	if err != nil || !strings.Contains(string(per), "I: seized") {
		t.Errorf("per-pid log: %v %q", err, per)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 1 {
		t.Errorf("left next to the images dir: %v", ents)
	}
	// JSON lines with -v 0 hold errors only.
	dir2 := filepath.Join(t.TempDir(), "ckpt2")
	code, _, _ = runCLI(t, "dump", "-R", "-t", fmt.Sprint(pid), "-D", dir2, "-o", "d.log", "--log-format", "json", "-v", "0")
	b, _ := os.ReadFile(filepath.Join(dir2, "d.log"))
	if code != 0 || len(b) != 0 {
		t.Errorf("-v 0 success logged %q (exit %d)", b, code)
	}
	t.Setenv(executor.FaultEnv, "write-images")
	dir3 := filepath.Join(t.TempDir(), "ckpt3")
	code, _, errs = runCLI(t, "dump", "-R", "-t", fmt.Sprint(pid), "-D", dir3, "-o", "d.log", "--log-format", "json", "-v", "0")
	if code != exitFailed || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "(log: "+dir3+".d.log)") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, _ = os.ReadFile(dir3 + ".d.log")
	var line map[string]any
	if err := json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &line); err != nil || line["level"] != "error" || line["t"] == nil {
		t.Errorf("json log line %q: %v", b, err)
	}
	if _, err := os.Stat(dir3); err == nil {
		t.Errorf("failed dump left an images directory")
	}
}

// TestConcurrentApplyExit4: a second apply of a recipe while the first
// runs exits at once with code 4 and a clear message.
func TestConcurrentApplyExit4(t *testing.T) {
	withFakeDumper(t, 1500*time.Millisecond)
	pid := sleeper(t)
	d := t.TempDir()
	spec := filepath.Join(d, "job.yaml")
	os.WriteFile(spec, []byte(fmt.Sprintf("apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: same}\nspec:\n  target: {pid: %d}\n  imagesDir: snaps/{{ .Time }}\n  leaveRunning: true\n", pid)), 0o644)
	first := make(chan int)
	go func() {
		var o, e bytes.Buffer
		first <- run([]string{"apply", spec}, &o, &e)
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	code, _, errs := runCLI(t, "apply", spec)
	if code != exitLocked || !strings.Contains(errs, `recipe "same" is locked by another run`) {
		t.Errorf("second apply: exit %d: %s", code, errs)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("second apply took %s", el)
	}
	if c := <-first; c != 0 {
		t.Errorf("first apply exit %d", c)
	}
}

// TestApplyDryRunAndJournal: --dry-run changes nothing; --journal writes
// the journal as JSON, also on failure.
func TestApplyDryRunAndJournal(t *testing.T) {
	withFakeDumper(t, 0)
	pid := sleeper(t)
	d := t.TempDir()
	spec := filepath.Join(d, "job.yaml")
	os.WriteFile(spec, []byte(fmt.Sprintf("apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: j}\nspec:\n  target: {pid: %d}\n  imagesDir: snaps/{{ .Time }}\n  leaveRunning: true\n  hooks: {preDump: [touch, side-effect]}\n", pid)), 0o644)
	code, out, _ := runCLI(t, "apply", "--dry-run", spec)
	if code != 0 || !strings.Contains(out, "Dry run: nothing was changed.") || !strings.Contains(out, "4. freeze") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(d, "side-effect")); err == nil {
		t.Fatal("dry run ran a hook")
	}
	if _, err := os.Stat(filepath.Join(d, "snaps")); err == nil {
		t.Fatal("dry run created the snapshots directory")
	}
	jf := filepath.Join(d, "journal.json")
	t.Setenv(executor.FaultEnv, "commit")
	code, out, _ = runCLI(t, "apply", "--journal", jf, spec)
	if code != exitFailed || !strings.Contains(out, "rolled-back") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var js []executor.Journal
	b, _ := os.ReadFile(jf)
	if err := json.Unmarshal(b, &js); err != nil || len(js) != 1 || js[0].Result != "rolled-back" {
		t.Fatalf("journal %s: %v", b, err)
	}
	if st := js[0].Steps[7]; st.Name != "commit" || st.Status != "failed" {
		t.Errorf("journal step 8: %+v", st)
	}
	ents, _ := os.ReadDir(filepath.Join(d, "snaps"))
	if len(ents) != 0 {
		t.Errorf("snapshots left: %v", ents)
	}
}

// TestCloseOption: --close FD closes that descriptor of crtools first.
func TestCloseOption(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const fd = 201
	if err := unix.Dup2(int(f.Fd()), fd); err != nil {
		t.Fatal(err)
	}
	code, _, _ := runCLI(t, "--close", fmt.Sprint(fd), "-V")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := unix.FcntlInt(fd, unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("fd %d still open after --close (%v)", fd, err)
		unix.Close(fd)
	}
}

// TestGhostLimitSizes: --ghost-limit takes bytes with K, M or G suffixes.
func TestGhostLimitSizes(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4K": 4 << 10, "4M": 4 << 20, "2g": 2 << 30, "10MB": 10 << 20} {
		var n int64
		if err := (sizeValue{&n}).Set(in); err != nil || n != want {
			t.Errorf("--ghost-limit %s: %d %v, want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1T", "1.5M", "99999999999G"} {
		var n int64
		if err := (sizeValue{&n}).Set(in); err == nil {
			t.Errorf("--ghost-limit %q accepted as %d", in, n)
		}
	}
}
