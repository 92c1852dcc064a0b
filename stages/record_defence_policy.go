package stages

import (
	"fmt"
	"time"

	"usocks/wire"
)

// DefenceParams is what one side's defence stage does for its sending
// direction (SPEC-v2.md §7a). A policy is a pair of these, one per role; the
// server's shapes the download, the client's the upload. Zero values turn a
// mechanism off.
type DefenceParams struct {
	// Cell makes every write a whole number of Cell-byte cells: the last
	// record of each write is padded up to the next multiple. With Cell at
	// the link's TCP payload size (1448 on a 1500-byte MTU with
	// timestamps) every segment the observer sees has the same size.
	Cell int
	// Idle is the quiet time (no data frames either way) that ends an
	// episode: the unit the defence pads and shapes. A page load is one
	// episode, or a few.
	Idle time.Duration
	// Bucket rounds the cells an episode sends up to the next power of
	// Bucket (at least MinCells) before it closes: the observer sees one
	// of a few volumes, not the page's. ≤ 1: off.
	Bucket   float64
	MinCells int
	// TailRate is how fast (cells/s) the dummies that fill the bucket
	// go out once the episode's data has stopped.
	TailRate float64
	// FillRate sends dummy cells (cells/s) while an episode is open and
	// nothing else is being sent, so gaps between bursts do not show.
	FillRate float64
	// Front sends N ~ U[0, Front] dummy cells at the start of every
	// episode, Rayleigh-timed over a window drawn from
	// [FrontWindow/2, FrontWindow] (FRONT, Gong & Wang 2020).
	Front       int
	FrontWindow time.Duration
	// Tie sends at least one cell for every Tie cells received (dummies
	// when there is nothing real to send), so the upload follows the
	// download instead of the application's requests (RegulaTor).
	Tie int
	// Rate, if set, sends at a constant Rate cells/s for the whole
	// episode: data waits for its slot, dummies fill empty slots
	// (Tamaraw). Records are then one cell each, or share one when
	// small frames fit together.
	Rate float64
	// Decay, if set, makes the paced rate a surge: it starts at Rate when
	// an episode opens and halves every Decay; below Rate/16 no dummies
	// are sent, and the next data starts a new surge. Data piling up
	// faster than the current rate sends in Surge also starts a new surge
	// at Rate (RegulaTor, Holland & Hopper 2022).
	Decay time.Duration
	Surge time.Duration
	// Fade, if set (with Rate), replaces the tail: once no data waits,
	// Idle has passed since data last went out and the episode's cells
	// have reached their bucket (the next one up from the cells sent
	// when data last went out), the paced rate fades, halving every Fade; data brings it back to Rate, and
	// once it falls below Rate/16 the episode is over. Without a Rate it
	// does nothing.
	Fade time.Duration
	// Ladder, if set (with Rate), starts each episode's paced rate at
	// Rate/2^Ladder; the rate may only climb, doubling (up to Rate) at
	// the points of a grid of Step from the episode's start where more
	// cells wait than the current rate sends in one Step. Small pages
	// pay their pauses at a low rate; the observer learns at most
	// Ladder rises, each on the grid (CS-BuFLO, Cai et al. 2014).
	// Without a Rate it does nothing. With Climb the rate rises only
	// where more cells wait than the current rate sends in Climb (data
	// waits, and fills pauses, instead of dummies); 0: Step.
	// With Ramp the rate also rises one rung every Ramp from the
	// episode's start whatever waits, the same schedule for every
	// episode (Step 0: the schedule alone).
	Ladder int
	Step   time.Duration
	Climb  time.Duration
	Ramp   time.Duration
	// Fall, if set (with Rate), makes the paced rate fall on a timetable
	// once Hold has passed since the episode's start: it halves every
	// Fall, down to Floor cells/s, and never rises again within the
	// episode, whatever waits. Like the ramp the schedule depends on
	// nothing but the time since the episode began, the same for every
	// episode (a fixed reference pattern, as Surakav and Palette shape
	// traces to); data waits for its slots. Excludes Step and Decay;
	// without a Rate it does nothing.
	Hold  time.Duration
	Fall  time.Duration
	Floor float64
	// MaxEpisode makes an episode bulk once this many real bytes went
	// out in it: from then on no dummies and no pacing, cells only, so a
	// long download pays the cell padding and nothing else.
	MaxEpisode int64
	// MaxEpisodeIn makes an episode bulk once this many bytes of data
	// came in during it: a side stops shaping its WINDOW updates and
	// requests during the peer's bulk transfer. Policies set it to the
	// peer's MaxEpisode.
	MaxEpisodeIn int64
	// Budget bounds dummy bytes to Budget × data bytes + BudgetFree over
	// any stretch of the session: a token bucket of BudgetFree bytes,
	// full at the start, that each data byte sent refills by Budget and
	// each dummy byte drains; when it is empty dummies stop (and are
	// counted as denied) until data refills it. 0: no bound.
	Budget     float64
	BudgetFree int64
}

// DefaultCell is the cell size: one TCP segment's payload on a 1500-byte
// MTU path with TCP timestamps.
const DefaultCell = 1448

// SmallCell is light's upload cell: requests and WINDOW updates take
// one or two instead of a whole segment each.
const SmallCell = 512

// DefencePolicy returns the parameters of policy p for role r, the table
// of SPEC-v2.md §7a. Off returns nil: no defence stage at all.
func DefencePolicy(p wire.DefencePolicy, r Role) *DefenceParams {
	server := r == Server
	switch p {
	case wire.DefenceLight:
		// No delay, no pacing: cells, FRONT dummies at each episode and
		// volume buckets, dummies within 6 % of the data (with cell
		// padding and headers about 20 % on the link).
		d := &DefenceParams{
			Cell: DefaultCell, Idle: 250 * time.Millisecond,
			Bucket: 1.25, MinCells: 8, TailRate: 4000,
			Front: 12, FrontWindow: time.Second,
			MaxEpisode: 8 << 20, MaxEpisodeIn: 8 << 20, Budget: 0.06, BudgetFree: 128 << 10,
		}
		if !server {
			// Requests and WINDOW updates are small: a third of a
			// segment per cell saves a quarter of light's overhead.
			d.Cell = SmallCell
		}
		return d
	case wire.DefenceStandard:
		// Tamaraw-style constant rate per episode, close to a 50 Mbit/s
		// link downstream, volume in steps of 1.25. The rate ramps up
		// over the episode's first 80 ms (a quarter, a half, then all
		// of it), the same for every episode: the pauses at the start
		// of a page load are covered at a fraction of the rate.
		d := &DefenceParams{
			Cell: DefaultCell, Idle: 80 * time.Millisecond,
			Bucket: 1.25, MinCells: 16, Rate: 3000, TailRate: 3000,
			Ladder: 2, Ramp: 40 * time.Millisecond,
			MaxEpisode: 16 << 20, MaxEpisodeIn: 1 << 20,
			Budget: 6, BudgetFree: 16 << 20,
		}
		if !server {
			// Uploads in page loads are small: past 1 MiB an upload
			// episode is bulk and leaves the 2.3 Mbit/s pace, which
			// starts at half for 50 ms.
			d.Rate, d.TailRate, d.MaxEpisode, d.MaxEpisodeIn = 200, 200, 1<<20, 16<<20
			d.Ladder, d.Ramp = 1, 50*time.Millisecond
			d.Budget, d.BudgetFree = 8, 4<<20
		}
		return d
	case wire.DefenceMax:
		// The same rate, every episode padded to at least 3,400 cells
		// (4.9 MB, all of it within 0.97 s) in steps of 2, and a fade
		// instead of the tail: the end of the data does not push an
		// episode of a large page into the next bucket. The upload's
		// minimum, 388 cells at 400/s, ends with the download's (a
		// shorter one showed the observer which pages outlast it), and
		// the fade starts 150 ms after the last data, so the episodes of
		// large pages still end with the minimum bucket.
		d := &DefenceParams{
			Cell: DefaultCell, Idle: 150 * time.Millisecond,
			Bucket: 2, MinCells: 3400, Rate: 3500, TailRate: 3500,
			Fade:       20 * time.Millisecond,
			MaxEpisode: 32 << 20, MaxEpisodeIn: 2 << 20,
			Budget: 16, BudgetFree: 32 << 20,
		}
		if !server {
			d.Rate, d.TailRate, d.MinCells, d.MaxEpisode, d.MaxEpisodeIn = 400, 400, 388, 2<<20, 32<<20
			d.Budget, d.BudgetFree = 16, 8<<20
		}
		return d
	}
	return nil
}

// Validate checks parameters that came from expert tuning.
func (d *DefenceParams) Validate() error {
	switch {
	case d.Cell != 0 && (d.Cell < 64 || d.Cell > 16384):
		return fmt.Errorf("cell must be 0 (off) or 64..16384 bytes, got %d", d.Cell)
	case d.Bucket != 0 && d.Bucket <= 1:
		return fmt.Errorf("bucket must be 0 (off) or above 1, got %g", d.Bucket)
	case d.Rate < 0 || d.FillRate < 0 || d.TailRate < 0 || d.Rate > 1e6 || d.FillRate > 1e6 || d.TailRate > 1e6:
		return fmt.Errorf("rates must be 0..1000000 cells/s")
	case d.Front < 0 || d.Front > 10000 || d.Tie < 0 || d.MinCells < 0 || d.Budget < 0 || d.BudgetFree < 0 || d.MaxEpisode < 0 || d.MaxEpisodeIn < 0:
		return fmt.Errorf("counts and budgets must not be negative (front ≤ 10000)")
	case d.Idle <= 0 && (d.Bucket != 0 || d.FillRate != 0 || d.Rate != 0):
		return fmt.Errorf("idle must be positive when episodes are shaped")
	case (d.Bucket != 0 || d.Rate != 0 || d.FillRate != 0 || d.Front != 0 || d.Tie != 0) && d.Cell == 0:
		return fmt.Errorf("dummies and shaping need cells (cell > 0)")
	case d.Bucket != 0 && d.TailRate == 0 && d.Fade == 0:
		return fmt.Errorf("bucket needs a tail_rate")
	case d.Decay < 0 || d.Surge < 0 || (d.Decay > 0 && (d.Rate == 0 || d.Surge == 0)):
		return fmt.Errorf("decay needs a rate and a surge threshold")
	case d.Decay > 0 && d.Bucket != 0:
		return fmt.Errorf("a decaying rate and buckets do not mix: set bucket 0")
	case d.Fade < 0 || (d.Fade > 0 && d.Decay > 0):
		return fmt.Errorf("fade and decay do not mix")
	case d.Ladder < 0 || d.Ladder > 8 || d.Step < 0 || d.Climb < 0 || d.Ramp < 0:
		return fmt.Errorf("ladder must be 0..8 and step not negative")
	case d.Ladder > 0 && ((d.Step == 0 && d.Ramp == 0) || d.Decay > 0):
		return fmt.Errorf("a ladder needs a step or a ramp, and no decay")
	case d.Hold < 0 || d.Fall < 0 || d.Floor < 0 || d.Floor > 1e6:
		return fmt.Errorf("hold, fall and floor must not be negative (floor ≤ 1000000)")
	case d.Fall > 0 && (d.Floor <= 0 || (d.Rate > 0 && d.Floor > d.Rate) || d.Step > 0 || d.Decay > 0):
		return fmt.Errorf("fall needs a floor in (0, rate], and no step or decay")
	case d.Fall == 0 && (d.Hold != 0 || d.Floor != 0):
		return fmt.Errorf("hold and floor need a fall")
	}
	return nil
}
