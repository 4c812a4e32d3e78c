// Package metrics holds the Prometheus collectors the service exports at
// /metrics on its own listener (METRICS_ADDR), not on the public port.
// Each server gets its own registry so tests can run many.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the service's collectors.
type Metrics struct {
	Registry        *prometheus.Registry
	Requests        *prometheus.CounterVec   // by route, method, status
	RequestDuration *prometheus.HistogramVec // by route
	GraphQLOps      *prometheus.CounterVec   // by operation type and top-level fields (Operation)
	GraphQLErrors   *prometheus.CounterVec   // by extensions.code
}

// New registers the collectors on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twofactor_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "status"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "twofactor_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		GraphQLOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twofactor_graphql_operations_total",
			Help: "GraphQL operations by type and top-level fields.",
		}, []string{"type", "name"}),
		GraphQLErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twofactor_graphql_errors_total",
			Help: "GraphQL errors by extensions.code.",
		}, []string{"code"}),
	}
	reg.MustRegister(m.Requests, m.RequestDuration, m.GraphQLOps, m.GraphQLErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
