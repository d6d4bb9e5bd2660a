package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// better says which way a figure is better.
type better int

const (
	higher better = iota
	lower
)

// table is the results as a Markdown table: one row per figure, a column
// per system, the ratio rqgo ÷ asynq and the target that ratio should meet.
type table struct{ rows [][]string }

func (t *table) add(name, format string, rqgo, asynq float64, b better, target string) {
	ratio := "—"
	if asynq != 0 {
		ratio = fmt.Sprintf("%.2f×", rqgo/asynq)
	}
	if target != "" {
		met := false
		r := rqgo / asynq
		switch target {
		case "≥ 2×":
			met = r >= 2
		case "≥ 3×":
			met = r >= 3
		case "≤ 1×":
			met = r <= 1
		case "< 1 ms":
			met = rqgo < 1
		}
		if met {
			target += " (met)"
		} else {
			target += " (not met)"
		}
	} else if b == lower {
		target = "lower is better"
	}
	t.rows = append(t.rows, []string{name, fmt.Sprintf(format, rqgo), fmt.Sprintf(format, asynq), ratio, target})
}

func (t *table) String() string {
	return markdown([]string{"figure", "rqgo", "asynq", "rqgo ÷ asynq", "target"}, t.rows)
}

// cmdTable lists Redis calls per job by command for each system.
func cmdTable(by [2]map[string]cmdStat, jobs int) string {
	names := map[string]bool{}
	for _, m := range by {
		for k := range m {
			names[k] = true
		}
	}
	keys := slices.Sorted(maps.Keys(names))
	// Most calls first.
	total := func(k string) int64 { return by[0][k].calls + by[1][k].calls }
	slices.SortStableFunc(keys, func(a, b string) int { return int(total(b) - total(a)) })
	var rows [][]string
	cell := func(m map[string]cmdStat, k string) string {
		s, ok := m[k]
		if !ok {
			return ""
		}
		return fmt.Sprintf("%.3f (%.2f µs)", float64(s.calls)/float64(jobs), float64(s.usec)/float64(jobs))
	}
	var rest [2]cmdStat
	for _, k := range keys {
		if total(k) < int64(jobs)/100 {
			// Under 0.01 calls per job on both sides: summed up below.
			for i := range by {
				rest[i].calls += by[i][k].calls
				rest[i].usec += by[i][k].usec
			}
			continue
		}
		rows = append(rows, []string{k, cell(by[0], k), cell(by[1], k)})
	}
	var calls [2]int64
	for i := range by {
		for _, s := range by[i] {
			calls[i] += s.calls
		}
	}
	other := [2]map[string]cmdStat{{"": rest[0]}, {"": rest[1]}}
	rows = append(rows, []string{"(all others)", cell(other[0], ""), cell(other[1], "")},
		[]string{"total calls", fmt.Sprintf("%.3f", float64(calls[0])/float64(jobs)), fmt.Sprintf("%.3f", float64(calls[1])/float64(jobs))})
	return markdown([]string{"command", "rqgo calls/job (µs/job)", "asynq calls/job (µs/job)"}, rows)
}

func markdown(header []string, rows [][]string) string {
	width := make([]int, len(header))
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for i, c := range r {
			pad := width[i] - len([]rune(c))
			if i == 0 {
				fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", pad))
			} else {
				fmt.Fprintf(&b, " %s%s |", strings.Repeat(" ", pad), c)
			}
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i, w := range width {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", w) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		}
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
	return b.String()
}
