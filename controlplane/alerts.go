package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
)

// AlertsPath receives Alertmanager's webhook notifications.
const AlertsPath = "/v1/alerts"

// maxAlertsBody bounds one notification (Alertmanager sends a group's
// alerts at once; max_alerts in its config keeps groups small).
const maxAlertsBody = 1 << 20

// alertmanagerMessage is Alertmanager's webhook payload (version 4), the
// parts that are recorded.
type alertmanagerMessage struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    string            `json:"startsAt"`
		EndsAt      string            `json:"endsAt"`
		Fingerprint string            `json:"fingerprint"`
	} `json:"alerts"`
}

// maxAlertsPerMessage bounds the audit events one notification writes;
// Alertmanager's max_alerts keeps a webhook under it.
const maxAlertsPerMessage = 100

// alertDetailMax bounds each recorded value: the audit log is not a
// second alert store.
const alertDetailMax = 512

// receiveAlerts records each alert of a notification as an audit event.
func (s *Server) receiveAlerts(w http.ResponseWriter, r *http.Request) {
	var msg alertmanagerMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAlertsBody))
	if err := dec.Decode(&msg); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			tooLarge(w, maxAlertsBody)
			return
		}
		graph.WriteError(w, http.StatusBadRequest, graph.CodeInvalidInput, "not an Alertmanager webhook message (JSON, version 4): "+err.Error())
		return
	}
	if msg.Version != "" && msg.Version != "4" {
		graph.WriteError(w, http.StatusBadRequest, graph.CodeInvalidInput, "unsupported Alertmanager webhook version "+clip(msg.Version)+"; want 4")
		return
	}
	if len(msg.Alerts) > maxAlertsPerMessage {
		graph.WriteError(w, http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
			fmt.Sprintf("%d alerts in one notification: at most %d (set max_alerts in the webhook config)", len(msg.Alerts), maxAlertsPerMessage))
		return
	}
	for i, a := range msg.Alerts {
		if a.Labels["alertname"] == "" {
			graph.WriteError(w, http.StatusBadRequest, graph.CodeInvalidInput, fmt.Sprintf("alert %d has no alertname label", i))
			return
		}
	}
	for _, a := range msg.Alerts {
		status := a.Status
		if status != "firing" && status != "resolved" {
			status = "firing"
		}
		name := a.Labels["alertname"]
		ev := store.NewAuditEvent("alertmanager", auth.Source(r.Context()), "alert", clip(name), "ok")
		ev.Detail = map[string]string{"status": status}
		for k, v := range map[string]string{
			"severity": a.Labels["severity"], "node": a.Labels["node"], "summary": a.Annotations["summary"],
			"startsAt": a.StartsAt, "endsAt": a.EndsAt, "fingerprint": a.Fingerprint,
		} {
			if v != "" {
				ev.Detail[k] = clip(v)
			}
		}
		if err := s.store.AppendAudit(r.Context(), ev); err != nil {
			http.Error(w, "cluster store unavailable", http.StatusServiceUnavailable)
			return
		}
		s.metrics.alertsReceived.WithLabelValues(status).Inc()
	}
	w.WriteHeader(http.StatusNoContent)
}

func clip(v string) string {
	if len(v) <= alertDetailMax {
		return v
	}
	return strings.ToValidUTF8(v[:alertDetailMax], "")
}
