package runner

import (
	"time"

	"usocks/stages"
	"usocks/wire"
)

// DefenseTuning overrides parameters of the agreed defence policy for what
// this side sends (experts only; SPEC-v2.md §7a explains each). Unset
// fields keep the policy's value; nothing here applies under `off`.
type DefenseTuning struct {
	Cell         *int           `yaml:"cell"`
	Idle         *time.Duration `yaml:"idle"`
	Bucket       *float64       `yaml:"bucket"`
	MinCells     *int           `yaml:"min_cells"`
	TailRate     *float64       `yaml:"tail_rate"`
	FillRate     *float64       `yaml:"fill_rate"`
	Front        *int           `yaml:"front"`
	FrontWindow  *time.Duration `yaml:"front_window"`
	Tie          *int           `yaml:"tie"`
	Rate         *float64       `yaml:"rate"`
	Decay        *time.Duration `yaml:"decay"`
	Surge        *time.Duration `yaml:"surge"`
	Fade         *time.Duration `yaml:"fade"`
	Ladder       *int           `yaml:"ladder"`
	Step         *time.Duration `yaml:"step"`
	Climb        *time.Duration `yaml:"climb"`
	Ramp         *time.Duration `yaml:"ramp"`
	Hold         *time.Duration `yaml:"hold"`
	Fall         *time.Duration `yaml:"fall"`
	Floor        *float64       `yaml:"floor"`
	MaxEpisode   *int64         `yaml:"max_episode"`
	MaxEpisodeIn *int64         `yaml:"max_episode_in"`
	Budget       *float64       `yaml:"budget"`
	BudgetFree   *int64         `yaml:"budget_free"`
}

// apply returns the parameters of policy p for role r with the tuning on
// top; nil for off.
func (t *DefenseTuning) apply(p wire.DefencePolicy, r stages.Role) *stages.DefenceParams {
	d := stages.DefencePolicy(p, r)
	if d == nil || t == nil {
		return d
	}
	set := func(dst, src any) {
		switch s := src.(type) {
		case *int:
			if s != nil {
				*dst.(*int) = *s
			}
		case *int64:
			if s != nil {
				*dst.(*int64) = *s
			}
		case *float64:
			if s != nil {
				*dst.(*float64) = *s
			}
		case *time.Duration:
			if s != nil {
				*dst.(*time.Duration) = *s
			}
		}
	}
	set(&d.Cell, t.Cell)
	set(&d.Idle, t.Idle)
	set(&d.Bucket, t.Bucket)
	set(&d.MinCells, t.MinCells)
	set(&d.TailRate, t.TailRate)
	set(&d.FillRate, t.FillRate)
	set(&d.Front, t.Front)
	set(&d.FrontWindow, t.FrontWindow)
	set(&d.Tie, t.Tie)
	set(&d.Rate, t.Rate)
	set(&d.Decay, t.Decay)
	set(&d.Surge, t.Surge)
	set(&d.Fade, t.Fade)
	set(&d.Ladder, t.Ladder)
	set(&d.Step, t.Step)
	set(&d.Climb, t.Climb)
	set(&d.Ramp, t.Ramp)
	set(&d.Hold, t.Hold)
	set(&d.Fall, t.Fall)
	set(&d.Floor, t.Floor)
	set(&d.MaxEpisode, t.MaxEpisode)
	set(&d.MaxEpisodeIn, t.MaxEpisodeIn)
	set(&d.Budget, t.Budget)
	set(&d.BudgetFree, t.BudgetFree)
	return d
}

// retiredKeys are keys that were replaced, with what to say to a config
// that still sets them.
var retiredKeys = map[string]string{
	"padding":      retiredDefence,
	"chaff":        retiredDefence,
	"chaff_window": retiredDefence,
	"idle_chaff":   retiredDefence,
}

const retiredDefence = "removed: traffic-analysis defence is one key now, defense: off | light | standard | max (README, wire/SPEC-v2.md §7a)"

// validateDefence checks `defense` and `defense_tuning` of one side. On
// the client `defense` is the policy it asks for (default standard); on
// the server the strongest it grants (default max).
func (c *Common) validateDefence(p *problems, server bool) {
	if c.Defense == "" {
		c.Defense = "standard"
		if server {
			c.Defense = "max"
		}
	}
	if _, err := wire.ParseDefencePolicy(c.Defense); err != nil {
		p.bad("defense", "%s", err)
		return
	}
	if c.Protocol == "v1" && c.DefenseTuning != nil {
		p.bad("defense_tuning", "v1 has no defence; remove this key")
		return
	}
	role := stages.Client
	if server {
		role = stages.Server
	}
	for q := wire.DefenceLight; q <= wire.DefenceMax; q++ {
		if d := c.DefenseTuning.apply(q, role); d != nil {
			if err := d.Validate(); err != nil {
				p.bad("defense_tuning", "with policy %s: %v", q, err)
				return
			}
		}
	}
}

// defencePolicy is the validated `defense` value.
func (c *Common) defencePolicy() wire.DefencePolicy {
	p, _ := wire.ParseDefencePolicy(c.Defense)
	return p
}
