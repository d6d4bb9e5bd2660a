package main

import (
	"cmp"
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
	return cmdTableN([]string{"rqgo calls/job (µs/job)", "asynq calls/job (µs/job)"}, by[:], []int{jobs, jobs})
}

// cmdTableN lists Redis calls per job by command, one column per header:
// by[i] over jobs[i] jobs. Commands under 0.01 calls per job summed over
// the columns are summed up in one row.
func cmdTableN(headers []string, by []map[string]cmdStat, jobs []int) string {
	names := map[string]bool{}
	for _, m := range by {
		for k := range m {
			names[k] = true
		}
	}
	keys := slices.Sorted(maps.Keys(names))
	perJob := func(k string) float64 {
		var sum float64
		for i, m := range by {
			sum += float64(m[k].calls) / float64(jobs[i])
		}
		return sum
	}
	// Most calls first.
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(perJob(b), perJob(a)) })
	var rows [][]string
	cell := func(s cmdStat, ok bool, jobs int) string {
		if !ok {
			return ""
		}
		return fmt.Sprintf("%.3f (%.2f µs)", float64(s.calls)/float64(jobs), float64(s.usec)/float64(jobs))
	}
	rest := make([]cmdStat, len(by))
	for _, k := range keys {
		if perJob(k) < 0.01 {
			// Under 0.01 calls per job over all columns: summed up below.
			for i := range by {
				rest[i].calls += by[i][k].calls
				rest[i].usec += by[i][k].usec
			}
			continue
		}
		row := []string{k}
		for i, m := range by {
			s, ok := m[k]
			row = append(row, cell(s, ok, jobs[i]))
		}
		rows = append(rows, row)
	}
	others, total := []string{"(all others)"}, []string{"total calls"}
	for i, m := range by {
		var calls int64
		for _, s := range m {
			calls += s.calls
		}
		others = append(others, cell(rest[i], true, jobs[i]))
		total = append(total, fmt.Sprintf("%.3f", float64(calls)/float64(jobs[i])))
	}
	rows = append(rows, others, total)
	return markdown(append([]string{"command"}, headers...), rows)
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
