package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (fixed at 100 on Linux, whatever the kernel's HZ).
const clockTicks = 100

// proc is a child process the bench started; it is stopped by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	tail *tailBuffer
	done chan struct{}
	err  error // set before done is closed
}

// startProc starts exe with args, under `taskset -c cpu` when taskset is
// given. Its stderr is kept (the last few KiB) for error messages; stdout
// goes to stdout if not nil.
func startProc(name, taskset string, cpu int, exe string, args []string, stdout io.Writer) (*proc, error) {
	argv := append([]string{exe}, args...)
	if taskset != "" {
		argv = append([]string{taskset, "-c", strconv.Itoa(cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &proc{name: name, cmd: cmd, tail: &tailBuffer{max: 4096}, done: make(chan struct{})}
	cmd.Stderr = p.tail
	cmd.Stdout = stdout
	// Its own process group keeps a terminal's Ctrl-C for the bench, which
	// then stops its children in order; Pdeathsig ends them if the bench
	// dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the process id (taskset execs the program in the same process).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// reason is one line on why the process ended: the last line it wrote to
// stderr, or its exit status.
func (p *proc) reason() string {
	if line := p.tail.lastLine(); line != "" {
		return line
	}
	if p.exited() && p.err != nil {
		return p.err.Error()
	}
	return "no message"
}

// stop sends SIGTERM to the process's PID, waits up to grace, then sends
// SIGKILL and waits a little more.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// lastLine is the last non-empty line, trimmed, at most 200 characters.
func (t *tailBuffer) lastLine() string {
	lines := strings.Split(strings.TrimSpace(t.String()), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if r := []rune(line); len(r) > 200 {
		line = string(r[:200]) + "…"
	}
	return line
}

// rssKiB is VmRSS of a process, in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("bad VmRSS line %q", bytes.TrimSpace(line))
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("no VmRSS in status")
}

// cpuTime is utime+stime of a process (all its threads).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

func parseStatCPU(stat []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses: fields are counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bad stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("bad stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bad stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// listeningPorts reads the TCP ports in LISTEN state from /proc/net/tcp
// and tcp6 text. It opens no connection, so it disturbs no server.
func listeningPorts(tables ...[]byte) map[int]bool {
	ports := map[int]bool{}
	for _, t := range tables {
		sc := bufio.NewScanner(bytes.NewReader(t))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			// sl local_address rem_address st ...
			if len(f) < 4 || f[3] != "0A" {
				continue
			}
			_, port, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(port, 16, 16); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// isListening reports whether some socket on this host listens on TCP port.
func isListening(port int) bool {
	var tables [][]byte
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if b, err := os.ReadFile(f); err == nil {
			tables = append(tables, b)
		}
	}
	if len(tables) == 0 {
		// No /proc: fall back to a connection.
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	return listeningPorts(tables...)[port]
}

// waitListening polls until port listens, p exits, or timeout passes.
func waitListening(ctx context.Context, p *proc, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i := 0; ; i++ {
		if isListening(port) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.reason())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: port %d not listening after %v", p.name, port, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(i+1)*5*time.Millisecond, 50*time.Millisecond)):
		}
	}
}

// freePort finds a free loopback port for a child to listen on. It
// prefers ports below the kernel's ephemeral range, which the bench's own
// outgoing connections cannot take between this check and the child's
// bind.
func freePort() (int, error) {
	if low := ephemeralLow(); low > 11000 {
		for range 50 {
			p := 10000 + mrand.IntN(low-10000)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				_ = ln.Close()
				return p, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// twoPorts is freePort twice: a tunnel's server port and its client's.
func twoPorts() (int, int, error) {
	a, err1 := freePort()
	b, err2 := freePort()
	return a, b, errors.Join(err1, err2)
}

// ephemeralLow is the first port of the ephemeral range; 0 if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}

// raiseNofile raises the soft open-files limit to at least want (capped at
// the hard limit). Children started afterwards inherit it. It returns the
// soft limit in force.
func raiseNofile(want uint64) (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		// Set it anyway: Go raises its own soft limit at start-up but
		// gives children the original one unless Setrlimit was called.
		return lim.Cur, unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	lim.Cur = min(want, lim.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// pinSelf binds every thread of this process to the given CPU (threads
// started later inherit it) and returns a function that restores the
// previous affinity and GOMAXPROCS.
func pinSelf(cpu int) (restore func(), err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := setAllThreads(&set); err != nil {
		_ = setAllThreads(&old)
		return nil, err
	}
	procs := runtime.GOMAXPROCS(1)
	return func() {
		_ = setAllThreads(&old)
		runtime.GOMAXPROCS(procs)
	}, nil
}

// setAllThreads sets the affinity of every thread in /proc/self/task,
// twice so that a thread started during the first pass is caught too.
func setAllThreads(set *unix.CPUSet) error {
	for range 2 {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range tids {
			tid, err := strconv.Atoi(filepath.Base(e.Name()))
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// cpusAllowed is how many CPUs this process may run on.
func cpusAllowed() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return runtime.NumCPU()
	}
	return set.Count()
}

// loadAvg is the 1-minute load average; -1 if unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// parseCPUBusy is the busy CPU time of the whole machine (all CPUs) from the
// text of /proc/stat.
func parseCPUBusy(stat []byte) (time.Duration, error) {
	for line := range bytes.Lines(stat) {
		f := strings.Fields(string(line))
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var busy int64
		// user nice system idle iowait irq softirq steal
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return 0, err
			}
			busy += v
		}
		return time.Duration(busy) * time.Second / clockTicks, nil
	}
	return 0, errors.New("no cpu line in /proc/stat")
}

// parseSelfCPU is utime+stime+cutime+cstime from /proc/self/stat text:
// this process and its children that were waited for.
func parseSelfCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bad stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return 0, errors.New("bad stat: too few fields")
	}
	var sum int64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad stat: %w", err)
		}
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTicks, nil
}

// cpuSample is the machine's busy CPU time and this process tree's share.
type cpuSample struct {
	busy, self time.Duration
	ok         bool
}

func sampleCPU() cpuSample {
	st, err1 := os.ReadFile("/proc/stat")
	me, err2 := os.ReadFile("/proc/self/stat")
	if err1 != nil || err2 != nil {
		return cpuSample{}
	}
	busy, err1 := parseCPUBusy(st)
	self, err2 := parseSelfCPU(me)
	return cpuSample{busy: busy, self: self, ok: err1 == nil && err2 == nil}
}

// othersSince is the CPU time that processes other than this one and its
// finished children used since s: other work on the machine, which skews
// the figures (kernel threads doing the bench's own network work count
// too, so it is rarely exactly 0).
func othersSince(s cpuSample) (time.Duration, bool) {
	now := sampleCPU()
	if !s.ok || !now.ok {
		return 0, false
	}
	return max(0, (now.busy-s.busy)-(now.self-s.self)), true
}
