package wfbench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// body is the deterministic content of one object of one load.
func body(seed uint64, page, load, obj int) io.Reader {
	var s [32]byte
	for i, v := range []uint64{seed, uint64(page), uint64(load), uint64(obj)} {
		for j := range 8 {
			s[i*8+j] = byte(v >> (8 * j))
		}
	}
	return rand.NewChaCha8(s)
}

// Target is the bench's web server: GET /o?p=P&l=L&o=O&n=N&t=T answers,
// after T microseconds, N deterministic bytes of object O of load L of
// page P; the request's other headers are ignored.
type Target struct {
	Seed uint64
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// StartTarget serves on a fresh loopback port.
func StartTarget(seed uint64) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Target{Seed: seed, ln: ln, done: make(chan struct{})}
	t.srv = &http.Server{Handler: http.HandlerFunc(t.serve), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	go func() {
		defer close(t.done)
		_ = t.srv.Serve(ln)
	}()
	return t, nil
}

// Addr is where the target listens.
func (t *Target) Addr() string { return t.ln.Addr().String() }

// Close stops the target and its connections.
func (t *Target) Close() {
	_ = t.srv.Close()
	<-t.done
}

func (t *Target) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var v [5]int
	for i, k := range []string{"p", "l", "o", "n", "t"} {
		n, err := strconv.Atoi(q.Get(k))
		if err != nil || n < 0 {
			http.Error(w, "bad "+k, http.StatusBadRequest)
			return
		}
		v[i] = n
	}
	if v[3] > 2*maxObjSize {
		http.Error(w, "too large", http.StatusBadRequest)
		return
	}
	select {
	case <-time.After(time.Duration(v[4]) * time.Microsecond):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(v[3]))
	_, _ = io.CopyN(w, body(t.Seed, v[0], v[1], v[2]), int64(v[3]))
}

// maxConns is how many parallel connections the loader opens to the
// site, as browsers do for HTTP/1.1.
const maxConns = 6

// Loader loads pages like a browser: one HTTP/1.1 keep-alive connection
// pool of up to six connections per load, objects requested as soon as
// the object that reveals them has arrived (plus a parse delay).
type Loader struct {
	Seed uint64
	Addr string // where connections go (the tunnel client's listener)
	// App counts the application bytes (requests and responses with
	// their headers) that went through the loader's connections.
	App atomic.Int64
}

// LoadResult is one load as the loader saw it.
type LoadResult struct {
	Start, LastByte time.Time
	Objects         int
	Bytes           int64 // response body bytes, all SHA-256 checked
}

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Load fetches every object of plan p (page and load numbers as given)
// and checks each body's SHA-256 against the expected content.
func (l *Loader) Load(ctx context.Context, p Page, page, load int) (LoadResult, error) {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, l.Addr)
			if err != nil {
				return nil, err
			}
			return countConn{c, &l.App}, nil
		},
		MaxConnsPerHost:     maxConns,
		MaxIdleConnsPerHost: maxConns,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	children := make([][]int, len(p.Objects))
	for i, o := range p.Objects {
		if o.Parent >= 0 {
			children[o.Parent] = append(children[o.Parent], i)
		}
	}
	res := LoadResult{Start: time.Now(), Objects: len(p.Objects)}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	var fetch func(i int)
	fetch = func(i int) {
		defer wg.Done()
		o := p.Objects[i]
		if i > 0 {
			select {
			case <-time.After(time.Duration(o.DelayUS) * time.Microsecond):
			case <-ctx.Done():
				return
			}
		}
		n, err := l.get(ctx, client, o, page, load, i)
		mu.Lock()
		if err != nil {
			errs = append(errs, fmt.Errorf("page %d load %d object %d: %w", page, load, i, err))
			cancel()
		} else {
			res.Bytes += n
			if now := time.Now(); now.After(res.LastByte) {
				res.LastByte = now
			}
		}
		mu.Unlock()
		if err != nil {
			return
		}
		wg.Add(len(children[i]))
		for _, c := range children[i] {
			go fetch(c)
		}
	}
	wg.Add(1)
	go fetch(0)
	wg.Wait()
	if len(errs) > 0 {
		return res, errs[0]
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	return res, nil
}

func (l *Loader) get(ctx context.Context, client *http.Client, o Object, page, load, obj int) (int64, error) {
	path := fmt.Sprintf("/o?p=%d&l=%d&o=%d&n=%d&t=%d", page, load, obj, o.Size, o.ThinkUS)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://site.example"+path, nil)
	if err != nil {
		return 0, err
	}
	// Pad the headers to the object's request size (the fixed part of a
	// Go request is about 80 bytes besides the path).
	req.Header.Set("User-Agent", "wfbench/1")
	if pad := o.ReqSize - len(path) - 100; pad > 0 {
		req.Header.Set("X-Pad", strings.Repeat("a", pad))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return n, err
	}
	if n != int64(o.Size) {
		return n, fmt.Errorf("got %d bytes, want %d", n, o.Size)
	}
	want := sha256.New()
	_, _ = io.CopyN(want, body(l.Seed, page, load, obj), int64(o.Size))
	if string(h.Sum(nil)) != string(want.Sum(nil)) {
		return n, errors.New("content differs (SHA-256)")
	}
	return n, nil
}
