//! A log with consumer groups that redelivers what a dropped member had not committed, and
//! fails, delays, repeats and reorders messages as its [`Dice`] says.

use super::Dice;
use crate::broker::Position;
use crate::broker::{check_size, Broker, Consumer, Message};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// One consumer group's place in a topic.
#[derive(Debug, Default)]
struct Group {
    /// The first offset never delivered to the group.
    next: usize,
    /// Offsets to deliver again, before new ones.
    again: VecDeque<usize>,
    /// What each live member took and has not committed.
    taken: HashMap<u64, BTreeSet<usize>>,
}

#[derive(Debug, Default)]
struct Topic {
    log: Vec<(String, Arc<[u8]>)>,
    groups: HashMap<String, Group>,
}

#[derive(Debug, Default)]
struct Shared {
    topics: Mutex<HashMap<String, Topic>>,
    /// Wakes every waiting consumer when any topic grows or a message is handed back.
    appended: Notify,
    members: AtomicU64,
}

impl Shared {
    fn topics(&self) -> Result<MutexGuard<'_, HashMap<String, Topic>>> {
        self.topics
            .lock()
            .map_err(|_| Error::poisoned("chaos broker"))
    }
}

/// A broker for the simulation: at-least-once like Kafka (a member that goes away hands its
/// uncommitted messages back to its group), with seeded faults.
#[derive(Debug, Clone)]
pub struct ChaosBroker {
    shared: Arc<Shared>,
    dice: Option<Arc<Dice>>,
}

impl ChaosBroker {
    /// An empty broker whose calls meet `dice`'s faults.
    pub fn new(dice: Arc<Dice>) -> Self {
        Self {
            shared: Arc::default(),
            dice: Some(dice),
        }
    }

    /// The same broker without faults: for the harness's own submissions and checks.
    pub fn calm(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            dice: None,
        }
    }

    /// How many messages `topic` holds.
    pub fn messages_in(&self, topic: &str) -> usize {
        self.shared
            .topics()
            .map_or(0, |topics| topics.get(topic).map_or(0, |t| t.log.len()))
    }

    /// Where each group stands in each topic, for a failing run's report: messages, the next
    /// new offset, those to deliver again, and what each member holds uncommitted.
    pub fn describe(&self) -> String {
        let Ok(topics) = self.shared.topics() else {
            return "the broker's lock is poisoned".into();
        };
        let mut lines: Vec<String> = topics
            .iter()
            .flat_map(|(name, topic)| {
                topic.groups.iter().map(move |(group, at)| {
                    let mut taken: Vec<_> =
                        at.taken.iter().filter(|(_, t)| !t.is_empty()).collect();
                    taken.sort();
                    format!(
                        "{name} {group}: {} messages, next {}, again {:?}, uncommitted {taken:?}",
                        topic.log.len(),
                        at.next,
                        at.again
                    )
                })
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    async fn before(&self, what: &str) -> Result<()> {
        match &self.dice {
            Some(dice) => dice.before("chaos broker", what).await,
            None => Ok(()),
        }
    }

    fn roll(&self, p: impl Fn(&super::Faults) -> f64, what: impl FnOnce() -> String) -> bool {
        self.dice
            .as_ref()
            .is_some_and(|dice| dice.roll(p(&dice.faults()), what))
    }
}

#[async_trait]
impl Broker for ChaosBroker {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<Position> {
        check_size("chaos broker", topic, &payload)?;
        let what = format!("producing to {topic}");
        self.before(&what).await?;
        let offset = {
            let mut topics = self.shared.topics()?;
            let log = &mut topics.entry(topic.to_string()).or_default().log;
            log.push((key.to_string(), payload.into()));
            log.len() as u64 - 1
        };
        self.shared.appended.notify_waiters();
        let done = Ok(Position::new(topic, 0, offset));
        match &self.dice {
            Some(dice) => dice.after("chaos broker", &what, done),
            None => done,
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        self.before(&format!("joining {group} on {topic}")).await?;
        let member = self.shared.members.fetch_add(1, Ordering::Relaxed);
        self.shared
            .topics()?
            .entry(topic.to_string())
            .or_default()
            .groups
            .entry(group.to_string())
            .or_default()
            .taken
            .insert(member, BTreeSet::new());
        Ok(Box::new(ChaosConsumer {
            broker: self.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            member,
            paused: false,
        }))
    }

    async fn ends(&self, topic: &str) -> Result<Vec<(i32, u64)>> {
        self.before(&format!("reading where {topic} ends")).await?;
        let topics = self.shared.topics()?;
        Ok(topics
            .get(topic)
            .map(|t| vec![(0, t.log.len() as u64)])
            .unwrap_or_default())
    }
}

#[derive(Debug)]
struct ChaosConsumer {
    broker: ChaosBroker,
    topic: String,
    group: String,
    member: u64,
    paused: bool,
}

impl ChaosConsumer {
    /// Takes the group's next message for this member, if there is one.
    fn take(&self) -> Result<Option<Message>> {
        let broker = &self.broker;
        let mut topics = broker.shared.topics()?;
        let Some(topic) = topics.get_mut(&self.topic) else {
            return Ok(None);
        };
        let len = topic.log.len();
        let group = topic.groups.entry(self.group.clone()).or_default();
        let offset = match group.again.pop_front() {
            Some(offset) => offset,
            None if group.next < len => {
                let first = group.next;
                group.next += 1;
                if group.next < len
                    && broker.roll(|f| f.reorder, || format!("reorder {}/{first}", self.topic))
                {
                    group.again.push_back(first);
                    group.next += 1;
                    first + 1
                } else {
                    first
                }
            }
            None => return Ok(None),
        };
        group.taken.entry(self.member).or_default().insert(offset);
        if broker.roll(
            |f| f.duplicate,
            || format!("deliver {}/{offset} again", self.topic),
        ) {
            group.again.push_back(offset);
        }
        let (key, payload) = topic.log[offset].clone();
        Ok(Some(Message {
            topic: self.topic.clone(),
            key,
            payload: payload.to_vec(),
            offset: offset as u64,
            partition: 0,
        }))
    }
}

#[async_trait]
impl Consumer for ChaosConsumer {
    async fn next(&mut self) -> Result<Message> {
        if self.paused {
            return std::future::pending().await;
        }
        self.broker
            .before(&format!("fetching from {}", self.topic))
            .await?;
        loop {
            let appended = self.broker.shared.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(message) = self.take()? {
                return Ok(message);
            }
            appended.await;
        }
    }

    async fn commit(&mut self, message: &Message) -> Result<()> {
        let what = format!("committing {}/{}", message.topic, message.offset);
        self.broker.before(&what).await?;
        if let Some(taken) = self
            .broker
            .shared
            .topics()?
            .get_mut(&self.topic)
            .and_then(|topic| topic.groups.get_mut(&self.group))
            .and_then(|group| group.taken.get_mut(&self.member))
        {
            let behind = taken.split_off(&(message.offset as usize + 1));
            *taken = behind;
        }
        match &self.broker.dice {
            Some(dice) => dice.after("chaos broker", &what, Ok(())),
            None => Ok(()),
        }
    }

    fn pause(&mut self) -> Result<()> {
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<()> {
        self.paused = false;
        Ok(())
    }
}

impl Drop for ChaosConsumer {
    /// The member is gone: what it took and did not commit goes to its group again.
    fn drop(&mut self) {
        let Ok(mut topics) = self.broker.shared.topics() else {
            return;
        };
        if let Some(group) = topics
            .get_mut(&self.topic)
            .and_then(|topic| topic.groups.get_mut(&self.group))
        {
            if let Some(taken) = group.taken.remove(&self.member) {
                group.again.extend(taken);
            }
        }
        drop(topics);
        self.broker.shared.appended.notify_waiters();
    }
}
