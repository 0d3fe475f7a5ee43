//! The key layout of the module docs' table, as functions: the only place key names are built
//! in Rust. (Scripts that reach a user's keys from a record build `TAG:g:` and `TAG:ut:` from
//! the shard tag they are given; their headers say so.)

/// The keys of one shard `N`, all starting with its hash tag `P:{N}`.
pub(super) struct ShardKeys {
    tag: String,
}

impl ShardKeys {
    pub fn new(prefix: &str, shard: u32) -> ShardKeys {
        ShardKeys { tag: format!("{prefix}:{{{shard}}}") }
    }

    /// `P:{N}`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `P:{N}:g:ACTIVITY/ORDER_NO`, a grant's record.
    pub fn record(&self, member: &str) -> String {
        format!("{}:g:{member}", self.tag)
    }

    /// `P:{N}:g:`, what a script prepends to a member to reach its record.
    pub fn record_prefix(&self) -> String {
        format!("{}:g:", self.tag)
    }

    /// `P:{N}:ut:ACTID`, the user's flow ids by open time.
    pub fn user_tokens(&self, act_id: i64) -> String {
        format!("{}:ut:{act_id}", self.tag)
    }

    /// `P:{N}:q`, the shard's crediting queue.
    pub fn queue(&self) -> String {
        format!("{}:q", self.tag)
    }

    /// `P:{N}:pk`, the shard's parked tokens.
    pub fn parked(&self) -> String {
        format!("{}:pk", self.tag)
    }

    /// `P:{N}:seq`, the shard's sequence.
    pub fn seq(&self) -> String {
        format!("{}:seq", self.tag)
    }

    /// `P:{N}:st:ACTIVITY`, the activity's stock bucket in this shard.
    pub fn stock(&self, activity_id: &str) -> String {
        format!("{}:st:{activity_id}", self.tag)
    }

    /// `P:{N}:ga:ACTIVITY`, the activity's grants in this shard: a stream, one entry `SEQ-0`
    /// a grant.
    pub fn activity_grants(&self, activity_id: &str) -> String {
        format!("{}:ga:{activity_id}", self.tag)
    }

    /// `P:{N}:ag:ACTIVITY`, the activity's grants in this shard as earlier versions indexed
    /// them: a zset of members by seq, read until its last grant is retired.
    pub fn legacy_activity_grants(&self, activity_id: &str) -> String {
        format!("{}:ag:{activity_id}", self.tag)
    }

    /// `P:{N}:rl:ACTIVITY/SCENE/ACTID/WINDOW_START`, the user's grants in one rate window.
    pub fn rate(&self, activity_id: &str, scene_id: &str, act_id: i64, window_start_ms: u64) -> String {
        format!("{}:rl:{activity_id}/{scene_id}/{act_id}/{window_start_ms}", self.tag)
    }

    /// `P:{N}:rl:-`, named in place of a rate window when the grant has none (a script's keys
    /// are fixed in number), never written.
    pub fn no_rate(&self) -> String {
        format!("{}:rl:-", self.tag)
    }

    /// `P:{N}:cr`, credited records waiting out their retention, scored by when they were
    /// credited (Redis's clock).
    pub fn credited(&self) -> String {
        format!("{}:cr", self.tag)
    }

    /// `P:{N}:rr:ACTIVITY`, what the activity's retired records in this shard add up to:
    /// `s:SCENE:n`, `s:SCENE:c`.
    pub fn retired_totals(&self, activity_id: &str) -> String {
        format!("{}:rr:{activity_id}", self.tag)
    }

    /// `P:{N}:rx:ACTIVITY:B`, one bucket of the users of this shard with retired records of
    /// the activity (see [`retired_bucket`]).
    pub fn retired_users(&self, activity_id: &str, act_id: i64, shards: u32) -> String {
        format!("{}:rx:{activity_id}:{}", self.tag, retired_bucket(act_id, shards))
    }

    /// `P:{N}:ok:ACTIVITY`, present when this shard vouches for the activity.
    pub fn vouched(&self, activity_id: &str) -> String {
        format!("{}:ok:{activity_id}", self.tag)
    }
}

/// Buckets of a shard's users with retired records of one activity: small sets stay in Redis's
/// compact integer encoding (8 bytes a user) up to 512 members, which covers 8M users per
/// activity on 16 shards.
pub(super) const RETIRED_USER_BUCKETS: u64 = 1024;

/// The bucket of `act_id` among [`RETIRED_USER_BUCKETS`]: its last six decimal digits over the
/// shard count (every user of a shard has the same remainder), which `retire.lua` computes the
/// same way from the id's text (Lua's numbers are doubles; six digits are exact).
pub(super) fn retired_bucket(act_id: i64, shards: u32) -> u64 {
    (act_id.unsigned_abs() % 1_000_000) / u64::from(shards.max(1)) % RETIRED_USER_BUCKETS
}

/// `P:{meta}`, the deployment's shard count.
pub(super) fn meta(prefix: &str) -> String {
    format!("{prefix}:{{meta}}")
}

/// `P:{cap}:w`, the fleet's credit window.
pub(super) fn cap_window(prefix: &str) -> String {
    format!("{prefix}:{{cap}}:w")
}

/// The keys of one group red packet, all starting with its hash tag `P:{pk.ID}`, so that a
/// claim and a close are one script on one slot.
pub(super) struct PacketKeys {
    tag: String,
}

impl PacketKeys {
    pub fn new(prefix: &str, packet_id: &str) -> PacketKeys {
        PacketKeys { tag: format!("{prefix}:{{pk.{packet_id}}}") }
    }

    /// `P:{pk.ID}:d`, the packet's definition (protobuf), written once.
    pub fn def(&self) -> String {
        format!("{}:d", self.tag)
    }

    /// `P:{pk.ID}:s`, the packet's state: `expect` (the expiry a send named it with), `closed`,
    /// `refund` (cents, once refunded).
    pub fn state(&self) -> String {
        format!("{}:s", self.tag)
    }

    /// `P:{pk.ID}:c`, the claims: actID → share index.
    pub fn claims(&self) -> String {
        format!("{}:c", self.tag)
    }
}

/// `P:{pko}:open`, packets not yet refunded, scored by when a refund sweep should look (the
/// expiry; a lease later once a sweep took one).
pub(super) fn packets_open(prefix: &str) -> String {
    format!("{prefix}:{{pko}}:open")
}
