package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
)

var nan = math.NaN()

// colors are the series' colours, the dashboard's.
var colors = []string{"#1f6feb", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

type series struct {
	Name string
	Y    []float64 // NaN: no value at that step
}

const (
	chartW, chartH                     = 560, 230
	marginL, marginR, marginT, marginB = 52, 14, 10, 26
)

// ticks returns about n round values covering [lo, hi].
func ticks(lo, hi float64, n int) []float64 {
	span := hi - lo
	mag := math.Pow(10, math.Floor(math.Log10(span/float64(n))))
	step := 10 * mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if span/(m*mag) <= float64(n) {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

func label(v float64) string {
	if v != 0 && (math.Abs(v) >= 1000 || math.Abs(v) < 1e-3) {
		return strconv.FormatFloat(v, 'e', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// lineChart draws series over xs as an inline SVG with axes and a legend of last values. Text in
// it is escaped here: the names come from the run's files.
func lineChart(xs []float64, ss []series) template.HTML {
	x0, x1, y0, y1 := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for i, y := range s.Y {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			x0, x1, y0, y1 = math.Min(x0, xs[i]), math.Max(x1, xs[i]), math.Min(y0, y), math.Max(y1, y)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH)
	if math.IsInf(x0, 0) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">no data</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	if x0 == x1 {
		x0, x1 = x0-1, x1+1
	}
	if y0 == y1 {
		d := math.Abs(y0) * 0.1
		if d == 0 {
			d = 1
		}
		y0, y1 = y0-d, y1+d
	}
	pad := (y1 - y0) * 0.05
	y0, y1 = y0-pad, y1+pad
	sx := func(x float64) float64 { return marginL + (x-x0)/(x1-x0)*(chartW-marginL-marginR) }
	sy := func(y float64) float64 { return chartH - marginB - (y-y0)/(y1-y0)*(chartH-marginT-marginB) }
	for _, v := range ticks(y0, y1, 5) {
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, marginL, chartW-marginR, sy(v), sy(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, marginL-6, sy(v)+4, label(v))
	}
	for _, v := range ticks(x0, x1, 8) {
		if v != math.Trunc(v) {
			continue
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`, sx(v), chartH-marginB+16, v)
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, marginL, marginL, marginT, chartH-marginB)
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, marginL, chartW-marginR, chartH-marginB, chartH-marginB)
	var legend strings.Builder
	for i, s := range ss {
		color := colors[i%len(colors)]
		var d strings.Builder
		last := nan
		for j, y := range s.Y {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			cmd := "L"
			if d.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, sx(xs[j]), sy(y))
			last = y
		}
		if d.Len() > 0 {
			fmt.Fprintf(&b, `<path class="line" stroke="%s" d="%s"><title>%s</title></path>`, color, strings.TrimSpace(d.String()), html.EscapeString(s.Name))
		}
		fmt.Fprintf(&legend, `<span><i style="background:%s"></i>%s %s</span>`, color, html.EscapeString(s.Name), label(last))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String() + `<div class="legend">` + legend.String() + `</div>`)
}

// barChart draws before/after bars per category (oracle scores in [0, 1]).
func barChart(cats []string, before, after []float64) template.HTML {
	const h = 230
	w := marginL + marginR + 56*len(cats)
	sy := func(y float64) float64 { return h - marginB - math.Max(0, math.Min(1, y))*(h-marginT-marginB) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" xmlns="http://www.w3.org/2000/svg" style="max-width:%dpx">`, w, h, w)
	for _, v := range []float64{0, 0.25, 0.5, 0.75, 1} {
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, marginL, w-marginR, sy(v), sy(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`, marginL-6, sy(v)+4, v)
	}
	for i, c := range cats {
		x := float64(marginL + 56*i + 8)
		for k, v := range []float64{before[i], after[i]} {
			cls := []string{"before", "after"}[k]
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="18" height="%.1f"><title>%s %s %.3f</title></rect>`,
				cls, x+float64(20*k), sy(v), h-marginB-sy(v), html.EscapeString(c), cls, v)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x+19, h-marginB+16, html.EscapeString(c))
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, marginL, w-marginR, h-marginB, h-marginB)
	b.WriteString(`</svg><div class="legend"><span><i class="before"></i>initial policy</span><span><i class="after"></i>final policy</span></div>`)
	return template.HTML(b.String())
}
