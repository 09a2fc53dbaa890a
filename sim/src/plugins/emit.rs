//! The end of every tick: orders the tick's events by event time (stably, so equal times keep the fixed
//! order of the feature chain), gives each a per-device id, encodes it as a CloudEvent, and folds the
//! encoded bytes into the run's stream digest.

use bevy::prelude::*;
use towntwin_core::event::{EventType, Header, TOWN_AREA, encode, topic};
use towntwin_core::time::Local;

use super::Feature;
use crate::world::{CLOCK_DEVICE, Outbox, Registry};

pub struct EmitPlugin;

impl Plugin for EmitPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Emitted>()
            .init_resource::<Stats>()
            .init_resource::<StreamDigest>()
            .add_systems(Update, encode_tick.in_set(Feature::Emit));
    }
}

/// One encoded event, ready for a broker.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub ty: EventType,
    pub time: i64,
}

/// The encoded events of the last tick; the caller takes them.
#[derive(Resource, Debug, Default)]
pub struct Emitted(pub Vec<Message>);

/// Counts by type and by local hour.
#[derive(Resource, Debug, Clone)]
pub struct Stats {
    pub total: u64,
    pub bytes: u64,
    pub by_type_hour: Vec<[u64; 24]>,
    seq: Vec<u32>,
    clock_seq: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { total: 0, bytes: 0, by_type_hour: vec![[0; 24]; EventType::ALL.len()], seq: Vec::new(), clock_seq: 0 }
    }
}

impl Stats {
    pub fn by_type(&self, ty: EventType) -> u64 {
        self.by_type_hour[ty as usize].iter().sum()
    }
}

/// BLAKE3 over every encoded event in generation order: topic, newline, payload, newline.
#[derive(Resource, Debug, Default)]
pub struct StreamDigest(pub blake3::Hasher);

fn encode_tick(mut outbox: ResMut<Outbox>, reg: Res<Registry>, mut emitted: ResMut<Emitted>, mut stats: ResMut<Stats>, mut digest: ResMut<StreamDigest>) {
    let mut pending = std::mem::take(&mut outbox.0);
    pending.sort_by_key(|p| p.time);
    if stats.seq.len() < reg.devices.len() {
        stats.seq.resize(reg.devices.len(), 0);
    }
    // BLAKE3 is fastest fed in large pieces: the tick's bytes are gathered and hashed once.
    let mut tick_bytes = Vec::with_capacity(pending.len() * 420);
    emitted.0.reserve(pending.len());
    for p in pending {
        let (area, kind, device, seq) = if p.device == CLOCK_DEVICE {
            stats.clock_seq += 1;
            (TOWN_AREA, "clock", "twin", stats.clock_seq)
        } else {
            let d = &reg.devices[p.device as usize];
            stats.seq[p.device as usize] += 1;
            (d.area.as_str(), d.kind.slug(), d.id.as_str(), stats.seq[p.device as usize])
        };
        let id = format!("{device}-{seq:x}");
        let header = Header { id: &id, area, kind, device, ty: p.ty, time: p.time, subject: p.subject.as_deref() };
        let mut buf = Vec::with_capacity(384);
        encode(&mut buf, &header, &p.data);
        let topic = topic(area, kind, device, p.ty);
        tick_bytes.extend_from_slice(topic.as_bytes());
        tick_bytes.push(b'\n');
        tick_bytes.extend_from_slice(&buf);
        tick_bytes.push(b'\n');
        stats.total += 1;
        stats.bytes += buf.len() as u64;
        stats.by_type_hour[p.ty as usize][Local::of(p.time).hour as usize] += 1;
        emitted.0.push(Message { topic, payload: buf, qos: p.ty.qos(), ty: p.ty, time: p.time });
    }
    digest.0.update(&tick_bytes);
}
