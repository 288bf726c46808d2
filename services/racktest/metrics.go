package racktest

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a replica's /metrics, as Prometheus reads it.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics reads the /metrics of the metrics listener at baseURL,
// within ctx (a nexus that hangs must not hold up its caller).
func ScrapeMetrics(ctx context.Context, baseURL string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing /metrics: %w", err)
	}
	return families, nil
}

// Sum adds the values of family name's metrics whose labels include want
// (a histogram's value is its count); ok false when none matches.
func (m Metrics) Sum(name string, want map[string]string) (sum float64, ok bool) {
	fam, found := m[name]
	if !found {
		return 0, false
	}
next:
	for _, metric := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range metric.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		ok = true
		switch {
		case metric.GetCounter() != nil:
			sum += metric.GetCounter().GetValue()
		case metric.GetGauge() != nil:
			sum += metric.GetGauge().GetValue()
		case metric.GetHistogram() != nil:
			sum += float64(metric.GetHistogram().GetSampleCount())
		case metric.GetUntyped() != nil:
			sum += metric.GetUntyped().GetValue()
		}
	}
	return sum, ok
}
