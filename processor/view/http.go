package view

import (
	"errors"
	"net/http"
	"strconv"
)

// ServeHTTP answers GET (or HEAD) ?key=<key> with the key's last value as the topic
// holds it (its encoded bytes, application/octet-stream): 200 with the value, 404
// when the View has no value for the key, 400 when the key is missing or does not parse
// (WithKeyParser; by default the key codec decodes the parameter), 503 before the View
// is ready or after Run has returned (Retry-After: 1), 502 when Redis failed, 405 for
// other methods. The response carries the View's largest partition lag in
// X-View-Lag.
func (v *View[K, V]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "view: use GET ?key=...", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	if !q.Has("key") {
		http.Error(w, "view: the key query parameter is required", http.StatusBadRequest)
		return
	}
	key, err := v.parse(q.Get("key"))
	if err != nil {
		http.Error(w, "view: key: "+err.Error(), http.StatusBadRequest)
		return
	}
	b, found, err := v.lookup(r, key)
	switch {
	case errors.Is(err, ErrNotReady) || errors.Is(err, ErrClosed):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var lag int64
	for _, l := range v.Lag() {
		lag = max(lag, l)
	}
	w.Header().Set("X-View-Lag", strconv.FormatInt(lag, 10))
	if !found {
		http.Error(w, "view: no value for this key", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}

// lookup returns key's stored bytes, undecoded.
func (v *View[K, V]) lookup(r *http.Request, key K) ([]byte, bool, error) {
	switch v.state.Load() {
	case stateReady:
	case stateClosed:
		return nil, false, ErrClosed
	default:
		return nil, false, ErrNotReady
	}
	kb, err := v.key.Encode(key)
	if err != nil {
		return nil, false, err
	}
	return v.store.get(r.Context(), kb)
}
