//! Check results, the Nagios / Consul script-check convention: 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN.

use std::fmt;

/// One check status. Ordering is by severity for monitoring, not by number: a CRITICAL
/// outranks an UNKNOWN (the monitoring-plugins `max_state_alt` order), so a health script
/// that found one broken node and could not reach another still pages as CRITICAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Status> {
        match code {
            0 => Some(Status::Ok),
            1 => Some(Status::Warning),
            2 => Some(Status::Critical),
            3 => Some(Status::Unknown),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The messages a script reported with `ok()`, `warning()`, `critical()` and `unknown()`.
#[derive(Clone, Debug, Default)]
pub struct Report {
    entries: Vec<(Status, String)>,
}

impl Report {
    pub fn add(&mut self, status: Status, message: impl Into<String>) {
        self.entries.push((status, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(Status, String)] {
        &self.entries
    }

    /// The worst status reported, OK when nothing was.
    pub fn worst(&self) -> Status {
        self.entries
            .iter()
            .fold(Status::Ok, |acc, (status, _)| acc.worst(*status))
    }

    /// `CRITICAL - vault sealed on controller2; consul has 2 of 3 servers`: the worst status,
    /// then every message, the most severe first, in the order reported within a status.
    pub fn summary_line(&self) -> String {
        self.summary_line_as(self.worst())
    }

    /// The summary line under a given label (used when `exit(n)` overrides the status).
    pub fn summary_line_as(&self, status: Status) -> String {
        self.summary_line_led_by(status, None)
    }

    /// The summary line under `status`, with `first` (a script error) before the messages.
    pub fn summary_line_led_by(&self, status: Status, first: Option<&str>) -> String {
        let mut entries: Vec<&(Status, String)> = self.entries.iter().collect();
        entries.sort_by_key(|(status, _)| std::cmp::Reverse(status.severity()));
        let messages: Vec<&str> = first
            .into_iter()
            .chain(entries.iter().map(|(_, m)| m.as_str()))
            .filter(|m| !m.is_empty())
            .collect();
        if messages.is_empty() {
            status.label().to_string()
        } else {
            format!("{} - {}", status.label(), messages.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_ranks_critical_above_unknown() {
        let mut report = Report::default();
        report.add(Status::Unknown, "controller3 unreachable");
        report.add(Status::Critical, "vault sealed on controller2");
        report.add(Status::Ok, "consul has 3 servers");
        assert_eq!(report.worst(), Status::Critical);
        assert_eq!(
            report.summary_line(),
            "CRITICAL - vault sealed on controller2; controller3 unreachable; consul has 3 servers"
        );
    }

    #[test]
    fn empty_report_is_ok() {
        assert_eq!(Report::default().summary_line(), "OK");
        assert_eq!(Report::default().worst().code(), 0);
    }
}
