package wfbench

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"
)

//go:embed classify.py
var classifyPy []byte

// Row is one (policy, link) line of the report.
type Row struct {
	Policy string `json:"policy"`
	Link   string `json:"link"`
	Loads  int    `json:"loads"`
	Pages  int    `json:"pages"`
	// RF and KNN are sklearn's cross-validated accuracies (nil without
	// python3-sklearn); GoKNN is the built-in k-NN's.
	RF    *float64 `json:"rf_accuracy"`
	KNN   *float64 `json:"knn_accuracy"`
	GoKNN float64  `json:"go_knn_accuracy"`
	// Overhead is wire bytes / application bytes − 1 over the session;
	// OverheadVsBase is wire bytes / the base policy's − 1 on the link.
	Overhead       float64 `json:"overhead"`
	OverheadVsBase float64 `json:"overhead_vs_base"`
	// LoadOverhead counts only the loads' traces: link bytes in them /
	// the loads' application bytes − 1 (no idle time between loads).
	LoadOverhead float64 `json:"overhead_in_loads"`
	AppBytes     int64   `json:"app_bytes"`
	WireBytes    int64   `json:"wire_bytes"`
	// PLT is the median page-load time; PLTRatio is it over the base's.
	PLTms    float64 `json:"plt_median_ms"`
	PLTRatio float64 `json:"plt_ratio"`
	Packets  float64 `json:"packets_per_trace_median"`
	Sessions int64   `json:"sessions"`
	Elapsed  string  `json:"elapsed"`
}

// Report is the bench's result.
type Report struct {
	Base       string  `json:"base_policy"`
	Chance     float64 `json:"chance"`
	Classifier string  `json:"classifier"`
	Features   int     `json:"features"`
	Rows       []Row   `json:"rows"`
}

// WriteCSV writes one line per sample: label (page), policy, link, load,
// then the features.
func WriteCSV(w io.Writer, runs []*RunResult) error {
	cw := csv.NewWriter(w)
	head := append([]string{"label", "policy", "link", "load"}, FeatureNames...)
	if err := cw.Write(head); err != nil {
		return err
	}
	for _, r := range runs {
		for _, s := range r.Samples {
			rec := []string{strconv.Itoa(s.Page), r.Policy, r.Link, strconv.Itoa(s.Load)}
			for _, v := range Features(s.Trace) {
				rec = append(rec, strconv.FormatFloat(v, 'g', -1, 64))
			}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// Python finds an interpreter with sklearn: Debian's python3-sklearn
// installs into /usr/bin/python3, which a python3 earlier on PATH (a
// virtualenv, pyenv) may hide, so it is tried first.
func Python() (string, error) {
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if exec.Command(p, "-c", "import sklearn, numpy").Run() == nil {
			return p, nil
		}
	}
	return "", errors.New("no python3 with sklearn (Debian: apt-get install python3-sklearn)")
}

// Classify runs the sklearn attacks on a CSV from WriteCSV; the error
// says why when python3 or sklearn is missing.
func Classify(csvPath string) (map[string]struct{ RF, KNN float64 }, error) {
	py, err := Python()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(py, "-", csvPath)
	cmd.Stdin = bytes.NewReader(classifyPy)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("classify.py: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var m map[string]struct{ RF, KNN float64 }
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("classify.py output: %w", err)
	}
	return m, nil
}

// BuildReport computes each run's row; acc holds sklearn's accuracies
// keyed "policy|link" (nil: none); base names the reference policy.
func BuildReport(runs []*RunResult, acc map[string]struct{ RF, KNN float64 }, base string, pages int) *Report {
	rep := &Report{Base: base, Chance: 1 / float64(max(1, pages)), Features: len(FeatureNames), Classifier: "sklearn RandomForest(200) and k-NN(3), stratified 10-fold CV (fewer folds if a page has fewer loads)"}
	if acc == nil {
		rep.Classifier = "Go k-NN(3) only (sklearn not run), stratified 10-fold CV"
	}
	baseRun := map[string]*RunResult{}
	for _, r := range runs {
		if r.Policy == base {
			baseRun[r.Link] = r
		}
	}
	for _, r := range runs {
		row := Row{Policy: r.Policy, Link: r.Link, Loads: len(r.Samples), Pages: pages, AppBytes: r.AppBytes, WireBytes: r.WireBytes, Sessions: r.Sessions, Elapsed: r.Elapsed.Round(time.Second).String()}
		x := make([][]float64, len(r.Samples))
		y := make([]int, len(r.Samples))
		plt := make([]float64, len(r.Samples))
		pk := make([]float64, len(r.Samples))
		var loadWire, loadApp int64
		for i, s := range r.Samples {
			loadWire += wireBytes(s.Trace)
			loadApp += s.App
			x[i], y[i] = Features(s.Trace), s.Page
			plt[i] = float64(s.PLT) / float64(time.Millisecond)
			pk[i] = float64(len(s.Trace))
		}
		row.GoKNN = KNNAccuracy(x, y, 3, 10, 1)
		if a, ok := acc[r.Policy+"|"+r.Link]; ok {
			row.RF, row.KNN = &a.RF, &a.KNN
		}
		row.Overhead = float64(r.WireBytes)/float64(max(1, r.AppBytes)) - 1
		row.LoadOverhead = float64(loadWire)/float64(max(1, loadApp)) - 1
		row.PLTms = quantile(plt, 0.5)
		row.Packets = quantile(pk, 0.5)
		if b := baseRun[r.Link]; b != nil {
			// Per application byte, so runs of different lengths compare.
			bw := float64(b.WireBytes) / float64(max(1, b.AppBytes))
			row.OverheadVsBase = (row.Overhead+1)/bw - 1
			var bp []float64
			for _, s := range b.Samples {
				bp = append(bp, float64(s.PLT)/float64(time.Millisecond))
			}
			row.PLTRatio = ratio(row.PLTms, quantile(bp, 0.5))
		}
		rep.Rows = append(rep.Rows, row)
	}
	sort.SliceStable(rep.Rows, func(i, j int) bool { return rep.Rows[i].Link < rep.Rows[j].Link })
	return rep
}

// WriteMarkdown prints the report as a Markdown table.
func (rep *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Closed world: %d pages, chance %.3f; %d features; %s; overhead and page-load time relative to %q.\n\n",
		rep.rowsPages(), rep.Chance, rep.Features, rep.Classifier, rep.Base)
	fmt.Fprintln(w, "| policy | link | loads | RF acc | k-NN acc | Go k-NN acc | overhead | vs base | in loads | median PLT | PLT vs base |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	opt := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	for _, r := range rep.Rows {
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %.3f | %s | %s | %s | %.0f ms | %.2f× |\n",
			r.Policy, r.Link, r.Loads, opt(r.RF), opt(r.KNN), r.GoKNN, pct(r.Overhead), pct(r.OverheadVsBase), pct(r.LoadOverhead), r.PLTms, r.PLTRatio)
	}
	for _, r := range rep.Rows {
		if r.Sessions > 1 {
			fmt.Fprintf(w, "\nNote: %s on %s needed %d tunnel sessions (the backend was lost and reconnected; see its log).\n", r.Policy, r.Link, r.Sessions)
		}
	}
}

func (rep *Report) rowsPages() int {
	if len(rep.Rows) == 0 {
		return 0
	}
	return rep.Rows[0].Pages
}

func pct(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f %%", 100*v)
}

// WriteFiles writes the report as report.json and report.md into dir.
func (rep *Report) WriteFiles(dir string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/report.json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	rep.WriteMarkdown(&md)
	return os.WriteFile(dir+"/report.md", md.Bytes(), 0o644)
}
