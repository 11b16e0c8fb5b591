package report

import "html/template"

// page is the report's one HTML document; everything it needs is inline.
var page = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bicot run {{.Run}}</title>
<style>
body { margin: 0 auto; max-width: 1200px; padding: 16px 20px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #d9dee7; padding-bottom: 4px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dt { color: #667085; } dd { margin: 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
svg { width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: #667085; } .grid { stroke: #eef0f3; } .axis { stroke: #98a2b3; }
.line { fill: none; stroke-width: 1.8; } rect.before, i.before { fill: #84caff; background: #84caff; } rect.after, i.after { fill: #1f6feb; background: #1f6feb; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 14px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; } th, td { padding: 3px 12px 3px 0; text-align: left; border-bottom: 1px solid #eef0f3; }
.pos { color: #1a7f37; } .neg { color: #b42318; } .note { color: #667085; font-size: 12px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; border-top: 1px solid #d9dee7; padding: 10px 0; }
.prompt { font-weight: 600; } .imgs { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
.imgs figure { width: 66px; text-align: center; font-size: 10px; color: #667085; white-space: nowrap; }
.imgs img { width: 64px; height: 64px; image-rendering: pixelated; display: block; border: 1px solid #d9dee7; }
.match { grid-column: 1 / -1; margin-bottom: -6px; }
</style>
</head>
<body>
<h1>bicot run {{.Run}}</h1>
<section id="summary">
<dl>{{range .Summary}}<dt>{{.K}}</dt><dd>{{.V}}</dd>{{end}}</dl>
</section>
<h2>Training curves</h2>
<div class="charts">
<figure id="reward"><figcaption>Reward per step (batch mean, total and per expert)</figcaption>{{.RewardChart}}</figure>
<figure id="kl"><figcaption>KL to the reference (total, plan, image)</figcaption>{{.KLChart}}</figure>
<figure id="loss"><figcaption>Loss</figcaption>{{.LossChart}}</figure>
<figure id="timing"><figcaption>Step time, seconds (wait: rollout + reward; train: the update)</figcaption>{{.TimeChart}}</figure>
</div>
{{if .EvalRows}}
<section id="oracle">
<h2>Oracle evaluation on held-out prompts, initial and final policy</h2>
{{.EvalChart}}
<table>
<tr><th>task type</th><th>initial</th><th>final</th><th>change</th></tr>
{{range .EvalRows}}<tr><td>{{.Task}}</td><td>{{.Initial}}</td><td>{{.Final}}</td><td class="{{if .Better}}pos{{else if .Worse}}neg{{end}}">{{.Delta}}</td></tr>
{{end}}</table>
</section>
{{end}}
<section id="samples">
<h2>Samples{{if .HasAfter}}: step {{.BeforeStep}} and step {{.AfterStep}}{{else if .SamplesShown}}: step {{.BeforeStep}}{{end}}</h2>
{{if not .SamplesShown}}<p class="note">No samples were kept in this run (the learner keeps them every samples_every steps when it has the codebook).</p>{{end}}
{{if .SamplesShown}}<p class="note">Each image with its total reward and, below it, its advantage; hover for the plan and the reward of each expert.{{if .HasAfter}} Rows pair a group of the first kept step with one of the last: by prompt when the run drew it again, else by task type.{{end}}</p>{{end}}
{{range .Pairs}}
<div class="pair">
{{if $.HasAfter}}<div class="note match">{{if .Match}}{{.Match}}{{else}}no group of step {{$.BeforeStep}} with this prompt or task type left{{end}}</div>{{end}}
{{with .Before}}<div class="before"><div class="note">step {{$.BeforeStep}}{{if .TaskType}} · {{.TaskType}}{{end}}</div><div class="prompt">{{.Prompt}}</div>
<div class="imgs">{{range .Samples}}<figure><img src="{{.Src}}" alt="sample" title="{{.Title}}"><figcaption>{{.Reward}}<br>{{.Advantage}}</figcaption></figure>{{end}}</div></div>{{else}}<div></div>{{end}}
{{with .After}}<div class="after"><div class="note">step {{$.AfterStep}}{{if .TaskType}} · {{.TaskType}}{{end}}</div><div class="prompt">{{.Prompt}}</div>
<div class="imgs">{{range .Samples}}<figure><img src="{{.Src}}" alt="sample" title="{{.Title}}"><figcaption>{{.Reward}}<br>{{.Advantage}}</figcaption></figure>{{end}}</div></div>{{end}}
</div>
{{end}}
</section>
<p class="note">Generated {{.Generated.Format "2006-01-02 15:04:05 MST"}} by learner report from the run's metrics{{if .Eval}}, eval.json{{end}} and kept samples.</p>
</body>
</html>
`))
