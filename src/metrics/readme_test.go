package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// documented is the README's metrics table (## Monitoring, ### Metrics):
// name → "type|labels", labels sorted and comma-separated.
func documented(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	_, section, ok := strings.Cut(readme, "\n### Metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Metrics section")
	}
	section, _, _ = strings.Cut(section, "\n### ")
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\| (gauge|counter|histogram) \\| ([^|]*) \\| [^|]+ \\|$")
	out := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := []string{}
		if l := strings.TrimSpace(m[3]); l != "–" {
			for _, name := range strings.Split(l, ",") {
				labels = append(labels, strings.TrimSpace(name))
			}
		}
		slices.Sort(labels)
		out[m[1]] = m[2] + "|" + strings.Join(labels, ",")
	}
	return out
}

// Every metric the manager serves is in the README's table with its type
// and labels, and every row of the table is served, from the first scrape.
func TestREADMEMetricsTable(t *testing.T) {
	want := documented(t)
	if len(want) < 20 {
		t.Fatalf("the README's metrics table has %d rows: %v", len(want), want)
	}
	families, err := New("github-runner", nil).Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]string{}
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		slices.Sort(labels)
		served[name] = strings.ToLower(dto.MetricType_name[int32(f.GetType())]) + "|" + strings.Join(labels, ",")
	}
	for name, kind := range served {
		if want[name] != kind {
			t.Errorf("%s is served as %s, documented as %q", name, kind, want[name])
		}
	}
	for name := range want {
		if _, ok := served[name]; !ok {
			t.Errorf("%s is documented but not served", name)
		}
	}
}
