//! The rollout's lines on `/metrics`: campaigns by state, their devices by state, and the device
//! steps and reports counted since start.

use crate::model::{Campaign, CampaignDevice, CampaignState, DeviceState};
use corral_services::MetricsSource;
use corral_services::metrics::Exposition;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct RolloutMetrics {
    /// Reported-twin changes of devices in a followed campaign.
    pub(crate) reports: AtomicU64,
    /// Device steps taken, by the state reached (index in `DeviceState::ALL`).
    steps: [AtomicU64; DeviceState::ALL.len()],
    /// The followed campaigns by state, and their devices by state, as of the last round.
    followed: Mutex<(BTreeMap<CampaignState, u64>, BTreeMap<DeviceState, u64>)>,
}

impl RolloutMetrics {
    pub(crate) fn moved(&self, state: DeviceState) {
        if let Some(i) = DeviceState::ALL.iter().position(|&s| s == state) {
            self.steps[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn observe<'a>(&self, campaigns: impl Iterator<Item = (&'a Campaign, &'a [CampaignDevice])>) {
        let (mut by_state, mut devices) = (BTreeMap::new(), BTreeMap::new());
        for (campaign, members) in campaigns {
            *by_state.entry(campaign.state).or_insert(0) += 1;
            for device in members {
                *devices.entry(device.state).or_insert(0) += 1;
            }
        }
        *self.followed.lock().unwrap_or_else(|p| p.into_inner()) = (by_state, devices);
    }
}

impl MetricsSource for RolloutMetrics {
    fn render(&self, out: &mut String) {
        let (campaigns, devices) = self.followed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut e = Exposition::new(out);
        let mut family = e.family("corral_campaigns", "Campaigns the rollout follows (open ones), by state.", "gauge");
        for state in [CampaignState::Draft, CampaignState::Running, CampaignState::Paused] {
            family.sample(&[("state", state.as_str())], campaigns.get(&state).copied().unwrap_or(0));
        }
        let mut family = e.family("corral_campaign_devices", "Devices of the followed campaigns, by state.", "gauge");
        for state in DeviceState::ALL {
            family.sample(&[("state", state.as_str())], devices.get(&state).copied().unwrap_or(0));
        }
        let mut family = e.family(
            "corral_campaign_device_steps_total",
            "Campaign device steps taken since start, by the state reached.",
            "counter",
        );
        for (i, state) in DeviceState::ALL.iter().enumerate().skip(1) {
            family.sample(&[("state", state.as_str())], self.steps[i].load(Ordering::Relaxed));
        }
        e.counter(
            "corral_campaign_reports_total",
            "Reported-twin changes heard from devices in a followed campaign.",
            self.reports.load(Ordering::Relaxed),
        );
    }
}
