package metrics_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/samsa-go/samsa/metrics"
)

func ExampleNewPrometheus() {
	prom, err := metrics.NewPrometheus("my-service")
	if err != nil {
		fmt.Println(err)
		return
	}
	// Pass prom.Provider to processor.WithMeterProvider / distributed.WithMeterProvider,
	// and serve prom.Handler() on /metrics.
	srv := httptest.NewServer(prom.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type")[:10])
	// Output: 200 text/plain
}
