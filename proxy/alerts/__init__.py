"""The alert router: rules over audit records, delivered to Slack, PagerDuty, webhooks and local sinks."""

from proxy.alerts.engine import Alert, RuleEngine
from proxy.alerts.router import AlertRouter
from proxy.alerts.rules import AlertConfigError, AlertRule, AlertsConfig, load_alerts_config, load_alerts_file

__all__ = [
    "Alert",
    "AlertConfigError",
    "AlertRouter",
    "AlertRule",
    "AlertsConfig",
    "RuleEngine",
    "load_alerts_config",
    "load_alerts_file",
]
