package logship

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// outcome of one push.
type outcome int

const (
	shipped outcome = iota
	retry
	reject
)

// rejectLogEvery limits the log lines about rejected batches.
const rejectLogEvery = time.Minute

// sendLoop pushes the buffer's segments, oldest first, one at a time:
// Loki wants each stream's entries in order.
func (s *Shipper) sendLoop() {
	backoff := time.Duration(0)
	for {
		seg, ok := s.buf.oldest()
		if !ok {
			select {
			case <-s.ctx.Done():
				return
			case <-s.buf.ready:
				continue
			}
		}
		data, err := s.buf.read(seg.seq)
		var body []byte
		if err == nil {
			_, body, err = decodeSegment(data)
		}
		if err != nil {
			// Dropped by add meanwhile (gone) or damaged: skip it.
			if s.buf.remove(seg.seq) {
				s.m.dropped.WithLabelValues("write_failed").Add(float64(seg.lines))
				s.log.Warn("log buffer segment unreadable; dropped", "err", err, "lines", seg.lines)
			}
			continue
		}
		s.buf.startPush(seg.seq)
		out, wait := s.push(body)
		switch out {
		case shipped:
			if s.buf.endPush(seg.seq, true) {
				s.m.shipped.Add(float64(seg.lines))
			}
			backoff = 0
			continue
		case reject:
			if s.buf.endPush(seg.seq, true) {
				s.m.dropped.WithLabelValues("rejected").Add(float64(seg.lines))
			}
			backoff = 0
			continue
		}
		if s.buf.endPush(seg.seq, false) {
			// Dropped for room during the push that failed.
			s.m.dropped.WithLabelValues("buffer_full").Add(float64(seg.lines))
		}
		backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
		// ±20% so that a fleet of agents does not retry in step.
		d := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		d = max(d, wait)
		t := time.NewTimer(d)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// maxRetryAfter caps a server's Retry-After.
const maxRetryAfter = 5 * time.Minute

// push sends one request body and classifies the answer as Loki's
// clients do: 2xx done; 429, 5xx and network errors retried; any other
// 4xx (including "entry too far behind" and "out of order") will never
// be accepted and is dropped.
func (s *Shipper) push(body []byte) (outcome, time.Duration) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return reject, 0
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "npanel-agent")
	if s.cfg.TenantID != "" {
		req.Header.Set("X-Scope-OrgID", s.cfg.TenantID)
	}
	switch {
	case s.cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+s.cfg.BearerToken)
	case s.cfg.Username != "":
		req.SetBasicAuth(s.cfg.Username, s.cfg.Password)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		if s.ctx.Err() == nil {
			s.m.failures.WithLabelValues("network").Inc()
			s.log.Debug("push to Loki failed", "err", err)
		}
		return retry, 0
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code := resp.StatusCode
	switch {
	case code/100 == 2:
		return shipped, 0
	case code == http.StatusTooManyRequests:
		s.m.failures.WithLabelValues("http_429").Inc()
		return retry, retryAfter(resp.Header.Get("Retry-After"))
	case code/100 == 5:
		s.m.failures.WithLabelValues("http_5xx").Inc()
		return retry, retryAfter(resp.Header.Get("Retry-After"))
	default:
		s.m.failures.WithLabelValues("http_4xx").Inc()
		if now := time.Now(); now.Sub(s.rejectLog) >= rejectLogEvery {
			s.rejectLog = now
			s.log.Warn("Loki rejected a log batch; dropped", "status", code, "answer", string(msg))
		}
		return reject, 0
	}
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter)
	}
	return 0
}
