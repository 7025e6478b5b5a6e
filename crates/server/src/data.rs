//! Devices, variables and readings as every dialect uses them: finding a device by label (auto-provisioning it
//! for a write), finding or creating variables, and handing readings to the batching writer. Devices and variables
//! are cached by label, so steady ingest touches the store only through the writer.
//!
//! The write operations take a [`Permit`] and check that it covers what they change.

use std::sync::Arc;

use tessera_core::profile::Profile;
use tessera_core::{
    AccountId, Action, CollectionId, DeviceId, Label, Permit, Reading, Scope, Target, Value, VariableId,
};
use tessera_store::{Device, Store, StoreError, Variable};

use crate::cache::{RecordCache, SharedReads};
use crate::entropy::new_id;
use crate::error::{AppError, permit_mismatch, require_permit};
use crate::time::now_ms;
use crate::tokens::Caller;
use crate::writer::{Origin, ReadingWriter};

/// One value to store in a variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Dot {
    pub timestamp_ms: i64,
    pub value: Value,
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// Where a device or variable lies, for `authorize`.
pub fn device_target(device: &Device) -> Target {
    Target::device(device.account, device.collection, device.id)
}

pub fn variable_target(variable: &Variable) -> Target {
    Target::variable(variable.account, variable.collection, variable.device, variable.id)
}

/// The most intervals one chart may ask `reading_buckets` for: a chart is a few thousand pixels wide at most, and
/// each interval is a row the store groups and answers.
pub const MAX_BUCKETS: i64 = 2_000;

/// Deletions invalidate cached devices and variables at once; this bounds staleness should the store be changed
/// behind the server's back.
const CACHE_TIME_TO_LIVE: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a write waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the readings are committed: for every request that is answered (HTTP, MQTT QoS 1).
    Committed,
    /// Until they are queued for the next commit: for MQTT QoS 0, which is owed no acknowledgement. Ordered like
    /// committed writes; a failed commit is logged, and the sender never learns of it (as QoS 0 promises).
    Queued,
}

#[derive(Debug)]
pub struct DataService {
    store: Arc<dyn Store>,
    writer: ReadingWriter,
    devices: RecordCache<(AccountId, Label), Arc<Device>>,
    variables: RecordCache<(DeviceId, Label), Arc<Variable>>,
    /// The devices and variables live readings are described with, by id, for every live consumer of this node
    /// (MQTT sessions, streams, console pages): one store read per record, however many consumers follow it.
    live_devices: SharedReads<DeviceId, Arc<Device>>,
    live_variables: SharedReads<VariableId, Arc<Variable>>,
    /// Readings in writes refused for a value (outside the range of instants, against the asset's profile).
    refused_readings: crate::metrics::Counter,
}

impl DataService {
    pub fn new(store: Arc<dyn Store>, writer: ReadingWriter, cache_capacity: u64) -> DataService {
        DataService {
            store,
            writer,
            devices: RecordCache::new(cache_capacity, CACHE_TIME_TO_LIVE),
            variables: RecordCache::new(cache_capacity, CACHE_TIME_TO_LIVE),
            live_devices: SharedReads::new(cache_capacity, CACHE_TIME_TO_LIVE),
            live_variables: SharedReads::new(cache_capacity, CACHE_TIME_TO_LIVE),
            refused_readings: crate::metrics::Counter::default(),
        }
    }

    /// The device and variable caches' figures (by label, and by id for live consumers).
    pub fn cache_figures(&self) -> [crate::metrics::CacheFigures; 4] {
        [
            self.devices.figures("devices"),
            self.variables.figures("variables"),
            self.live_devices.figures("live_devices"),
            self.live_variables.figures("live_variables"),
        ]
    }

    /// Readings refused for their value since start (every reading of a refused write: one refuses them all).
    pub fn refused_readings(&self) -> u64 {
        self.refused_readings.get()
    }

    /// A device was changed or deleted (here, or on another node): its label may name another device from now on,
    /// and live readings are described with what the store holds now. `id` is `None` when the node that told does
    /// not say it (an older version): then every live description goes.
    pub fn device_changed_here(&self, account: AccountId, id: Option<DeviceId>, label: Label) {
        self.devices.invalidate(&(account, label));
        match id {
            Some(id) => self.live_devices.invalidate(&id),
            None => self.live_devices.invalidate_all(),
        }
    }

    /// A variable was changed or deleted (here, or on another node); `id` as in
    /// [`DataService::device_changed_here`].
    pub fn variable_changed_here(&self, device: DeviceId, id: Option<VariableId>, label: Label) {
        self.variables.invalidate(&(device, label));
        match id {
            Some(id) => self.live_variables.invalidate(&id),
            None => self.live_variables.invalidate_all(),
        }
    }

    /// Empties the caches, after changes were missed that cannot be named.
    pub fn forget_everything(&self) {
        self.devices.invalidate_all();
        self.variables.invalidate_all();
        self.live_devices.invalidate_all();
        self.live_variables.invalidate_all();
    }

    /// Drops a changed or deleted variable from this node's caches; the store told the other nodes in the change's
    /// own transaction.
    fn variable_changed(&self, variable: &Variable) {
        self.variable_changed_here(variable.device, Some(variable.id), variable.label.clone());
    }

    pub fn writer(&self) -> &ReadingWriter {
        &self.writer
    }

    /// The device with `label` in `account`.
    pub async fn device_by_label(&self, account: AccountId, label: &Label) -> Result<Arc<Device>, AppError> {
        let key = (account, label.clone());
        if let Some(device) = self.devices.get(&key) {
            return Ok(device);
        }
        let started = self.devices.read_started();
        let device = Arc::new(
            self.store.device_by_label(account, label).await.map_err(|error| AppError::from_store("device", error))?,
        );
        self.devices.insert_read(key, device.clone(), started);
        Ok(device)
    }

    /// The device with `label`, authorized for `action`. A device the caller cannot see is reported as denied,
    /// not as missing, exactly as a device that does not exist would be for a caller outside the account.
    pub async fn device_for(
        &self,
        caller: &Caller,
        action: Action,
        label: &Label,
    ) -> Result<(Arc<Device>, Permit), AppError> {
        let device = self.device_by_label(caller.account(), label).await?;
        let permit = caller.authorize(action, &device_target(&device))?;
        Ok((device, permit))
    }

    /// The device with `label`, authorized for writing, created in the caller's home collection if the label is
    /// new to the account. A label already claimed by another collection is refused unless the caller reaches it.
    pub async fn device_for_write(&self, caller: &Caller, label: &Label) -> Result<(Arc<Device>, Permit), AppError> {
        match self.device_for(caller, Action::Write, label).await {
            Err(AppError::NotFound(_)) => {}
            found => return found,
        }
        let home = self.home_collection(caller).await?;
        let permit = caller.authorize(Action::Write, &Target::collection(caller.account(), home))?;
        let device = self.create_device(&permit, label.clone(), label.to_string()).await?;
        // Judge the device that holds the label now: ours, or one another collection claimed a moment earlier.
        let permit = caller.authorize(Action::Write, &device_target(&device))?;
        Ok((device, permit))
    }

    /// Where devices created by this caller land: its collection for a collection token, the account's default
    /// collection for an account-wide one. Other credentials do not create devices.
    pub async fn home_collection(&self, caller: &Caller) -> Result<CollectionId, AppError> {
        match caller.grant.scope {
            Scope::Collection(collection) => Ok(collection),
            Scope::Account => self
                .store
                .default_collection(caller.account())
                .await
                .map(|collection| collection.id)
                .map_err(|error| AppError::from_store("default collection", error)),
            _ => Err(AppError::Denied(tessera_core::Denial::OutOfScope)),
        }
    }

    /// Creates a device in the collection the permit names (a write permit on that collection), unless its label
    /// is taken, and returns whichever device holds the label.
    pub async fn create_device(&self, permit: &Permit, label: Label, name: String) -> Result<Arc<Device>, AppError> {
        let Some(collection) = permit.target().collection_id() else {
            return Err(permit_mismatch(permit, "create device"));
        };
        require_permit(permit, Action::Write, &Target::collection(permit.account(), collection), "create device")?;
        let candidate = Device {
            id: DeviceId(new_id()),
            account: permit.account(),
            collection,
            label: label.clone(),
            name,
            created_at_ms: now_ms(),
            imsi: None,
            imei: None,
            tags: Default::default(),
            last_seen_at_ms: None,
        };
        let started = self.devices.read_started();
        let device = self
            .store
            .insert_device_if_absent(&candidate)
            .await
            .map_err(|error| AppError::from_store("collection", error))?;
        let device = Arc::new(device);
        self.devices.insert_read((permit.account(), label), device.clone(), started);
        Ok(device)
    }

    /// Creates `device` in the collection the permit names; `Conflict` if its label, IMSI or IMEI is taken.
    pub async fn insert_device(&self, permit: &Permit, device: &Device) -> Result<Arc<Device>, AppError> {
        if !permit.covers(Action::Write, &Target::collection(permit.account(), device.collection))
            || device.account != permit.account()
        {
            return Err(permit_mismatch(permit, "insert device"));
        }
        let stored = self
            .store
            .insert_device_if_absent(device)
            .await
            .map_err(|error| AppError::from_store("collection", error))?;
        if stored.id != device.id {
            return Err(AppError::Conflict(format!("the label '{}' is taken", device.label)));
        }
        Ok(Arc::new(stored))
    }

    /// Queues a message for a device; needs a write permit on the device.
    pub async fn queue_downlink(&self, permit: &Permit, downlink: &tessera_store::Downlink) -> Result<(), AppError> {
        let device = self
            .store
            .device(downlink.account, downlink.device)
            .await
            .map_err(|error| AppError::from_store("device", error))?;
        require_permit(permit, Action::Write, &device_target(&device), "queue downlink")?;
        self.store.insert_downlink(downlink).await.map_err(|error| AppError::from_store("device", error))
    }

    pub async fn delete_device(&self, permit: &Permit, device: &Device) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &device_target(device), "delete device")?;
        self.store
            .delete_device(device.account, device.id)
            .await
            .map_err(|error| AppError::from_store("device", error))?;
        // Cached variables of the device stay unreachable: lookups go through the device, and ids are never reused.
        // The store told the other nodes in the deletion's own transaction.
        self.device_changed_here(device.account, Some(device.id), device.label.clone());
        Ok(())
    }

    /// The variable `label` of `device`.
    pub async fn variable_by_label(&self, device: &Device, label: &Label) -> Result<Arc<Variable>, AppError> {
        let key = (device.id, label.clone());
        if let Some(variable) = self.variables.get(&key) {
            return Ok(variable);
        }
        let started = self.variables.read_started();
        let variable = Arc::new(
            self.store
                .variable_by_label(device.id, label)
                .await
                .map_err(|error| AppError::from_store("variable", error))?,
        );
        self.variables.insert_read(key, variable.clone(), started);
        Ok(variable)
    }

    /// The variable `label` of `device`, created with `name` and `unit` if it does not exist. Needs a write permit
    /// on the device.
    pub async fn variable_for_write(
        &self,
        permit: &Permit,
        device: &Device,
        label: &Label,
        name: &str,
        unit: &str,
    ) -> Result<Arc<Variable>, AppError> {
        require_permit(permit, Action::Write, &device_target(device), "create variable")?;
        match self.variable_by_label(device, label).await {
            Err(AppError::NotFound(_)) => {}
            found => return found,
        }
        let candidate = Variable {
            id: VariableId(new_id()),
            account: device.account,
            device: device.id,
            collection: device.collection,
            label: label.clone(),
            name: name.to_owned(),
            unit: unit.to_owned(),
            created_at_ms: now_ms(),
            title: String::new(),
            description: String::new(),
            kind: "sensor".into(),
            profile: None,
        };
        let started = self.variables.read_started();
        let variable = Arc::new(
            self.store
                .insert_variable_if_absent(&candidate)
                .await
                .map_err(|error| AppError::from_store("device", error))?,
        );
        self.variables.insert_read((device.id, label.clone()), variable.clone(), started);
        Ok(variable)
    }

    /// Creates the variable `definition` describes on its device, or brings an existing one of the same label up to
    /// it (name, unit, title, description, kind, profile). Needs a write permit on the device.
    pub async fn define_variable(
        &self,
        permit: &Permit,
        device: &Device,
        definition: Variable,
    ) -> Result<Arc<Variable>, AppError> {
        let existing =
            self.variable_for_write(permit, device, &definition.label, &definition.name, &definition.unit).await?;
        let wanted = Variable { id: existing.id, created_at_ms: existing.created_at_ms, ..definition };
        if *existing == wanted {
            return Ok(existing);
        }
        self.store.update_variable(&wanted).await.map_err(|error| AppError::from_store("variable", error))?;
        self.variable_changed(&wanted);
        Ok(Arc::new(wanted))
    }

    pub async fn delete_variable(&self, permit: &Permit, variable: &Variable) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &variable_target(variable), "delete variable")?;
        self.store
            .delete_variable(variable.account, variable.id)
            .await
            .map_err(|error| AppError::from_store("variable", error))?;
        self.variable_changed(variable);
        self.writer.readings_deleted(variable.id);
        Ok(())
    }

    /// The device with `id`, authorized for `action`; a device the caller cannot reach is refused, one that does
    /// not exist is not found.
    pub async fn device_by_id(
        &self,
        caller: &Caller,
        action: Action,
        id: tessera_core::DeviceId,
    ) -> Result<(Device, Permit), AppError> {
        let device =
            self.store.device(caller.account(), id).await.map_err(|error| AppError::from_store("device", error))?;
        let permit = caller.authorize(action, &device_target(&device))?;
        Ok((device, permit))
    }

    /// The device with `id` for reading, with its activity as of now on this node (see
    /// [`DataService::device_overview`]).
    pub async fn device_as_of_now(
        &self,
        caller: &Caller,
        id: tessera_core::DeviceId,
    ) -> Result<(Device, Permit), AppError> {
        let (mut device, permit) = self.device_by_id(caller, Action::Read, id).await?;
        self.with_unflushed_activity(&mut device);
        Ok((device, permit))
    }

    /// A device's last-seen time with what this node committed since its last flush (the store's is up to one
    /// flush interval old; nothing is written on a read).
    fn with_unflushed_activity(&self, device: &mut Device) {
        if let Some(latest) = self.writer.unflushed_activity(device.id) {
            device.last_seen_at_ms = Some(device.last_seen_at_ms.map_or(latest, |stored| stored.max(latest)));
        }
    }

    /// The variable with `id`, authorized for `action`.
    pub async fn variable_by_id(
        &self,
        caller: &Caller,
        action: Action,
        id: tessera_core::VariableId,
    ) -> Result<(Variable, Permit), AppError> {
        let variable =
            self.store.variable(caller.account(), id).await.map_err(|error| AppError::from_store("variable", error))?;
        let permit = caller.authorize(action, &variable_target(&variable))?;
        Ok((variable, permit))
    }

    /// The collection with `id`, authorized for `action`.
    pub async fn collection(
        &self,
        caller: &Caller,
        action: Action,
        id: tessera_core::CollectionId,
    ) -> Result<(tessera_store::Collection, Permit), AppError> {
        let permit = caller.authorize(action, &Target::collection(caller.account(), id))?;
        let collection = self
            .store
            .collection(caller.account(), id)
            .await
            .map_err(|error| AppError::from_store("collection", error))?;
        Ok((collection, permit))
    }

    /// Stores a collection's name and tags under a write permit for it.
    pub async fn update_collection(
        &self,
        permit: &Permit,
        collection: &tessera_store::Collection,
    ) -> Result<(), AppError> {
        require_permit(
            permit,
            Action::Write,
            &Target::collection(collection.account, collection.id),
            "update collection",
        )?;
        Ok(self.store.update_collection(collection).await?)
    }

    /// Stores a device's name, tags and identifiers under a write permit for it (a clash of IMSI or IMEI is a
    /// conflict).
    pub async fn update_device(&self, permit: &Permit, device: &Device) -> Result<(), StoreError> {
        if !permit.covers(Action::Write, &device_target(device)) {
            return Err(StoreError::Internal(format!("no permit covers updating device {}", device.id).into()));
        }
        self.store.update_device(device).await?;
        self.device_changed_here(device.account, Some(device.id), device.label.clone());
        Ok(())
    }

    /// The devices `filter` selects that the caller may read, each authorized; `total` is the store's count for
    /// the filter, which callers narrow with [`visible_devices`] first.
    pub async fn list_devices(
        &self,
        caller: &Caller,
        filter: &tessera_store::DeviceFilter,
        page: tessera_store::Page,
    ) -> Result<tessera_store::Paged<Device>, AppError> {
        let mut devices = self.store.list_devices(caller.account(), filter, page).await?;
        devices.items.retain(|device| caller.authorize(Action::Read, &device_target(device)).is_ok());
        Ok(devices)
    }

    /// The variables of the devices `filter` selects that the caller may read, each authorized.
    pub async fn list_variables(
        &self,
        caller: &Caller,
        filter: &tessera_store::DeviceFilter,
        page: tessera_store::Page,
    ) -> Result<tessera_store::Paged<Variable>, AppError> {
        let mut variables = self.store.list_variables(caller.account(), filter, page).await?;
        variables.items.retain(|variable| caller.authorize(Action::Read, &variable_target(variable)).is_ok());
        Ok(variables)
    }

    /// The devices of the collection a read permit names, as the console lists them (filtered by label and by
    /// activity, ordered by label or by last activity). Read from the store, not the by-label cache, whose devices
    /// keep the last-seen time they were read with.
    pub async fn device_overview(
        &self,
        permit: &Permit,
        query: &tessera_store::DeviceQuery,
        page: tessera_store::Page,
    ) -> Result<tessera_store::Paged<Device>, AppError> {
        let Some(collection) = permit.target().collection_id() else {
            return Err(permit_mismatch(permit, "device overview"));
        };
        require_permit(permit, Action::Read, &Target::collection(permit.account(), collection), "device overview")?;
        let mut devices = self.store.device_overview(permit.account(), collection, query, page).await?;
        // Reading a collection is reading each of its devices, so this keeps them all; it is the listings' rule
        // (every item judged) all the same, should the query ever answer a device from elsewhere.
        devices.items.retain(|device| permit.covers(Action::Read, &device_target(device)));
        // Each listed device says when this node last heard from it, even before the flush; the order and the
        // "not seen for" filter are the store's (at most one flush interval behind).
        for device in &mut devices.items {
            self.with_unflushed_activity(device);
        }
        Ok(devices)
    }

    /// The variables of these devices that the caller may read, each with its last reading, grouped by device in
    /// the order given and by label within a device (a page of the console's device listing).
    pub async fn variables_with_last(
        &self,
        caller: &Caller,
        devices: &[DeviceId],
    ) -> Result<Vec<(Variable, Option<Reading>)>, AppError> {
        let mut variables = self.store.variables_with_last(caller.account(), devices).await?;
        variables.retain(|(variable, _)| caller.authorize(Action::Read, &variable_target(variable)).is_ok());
        Ok(variables)
    }

    /// A chart of a variable the permit reads: its numeric readings within `range` aggregated per `bucket_ms`
    /// (see `ReadingStore::reading_buckets`). More than [`MAX_BUCKETS`] intervals, or a bucket that is not a
    /// positive number of milliseconds, is refused.
    pub async fn reading_buckets(
        &self,
        permit: &Permit,
        variable: &Variable,
        range: tessera_store::TimeRange,
        bucket_ms: i64,
    ) -> Result<Vec<tessera_store::ReadingBucket>, AppError> {
        require_permit(permit, Action::Read, &variable_target(variable), "reading buckets")?;
        if bucket_ms <= 0 {
            return Err(AppError::BadRequest(format!("a bucket must last at least 1 ms, not {bucket_ms} ms")));
        }
        // In i128: the widest range is 2^64 ms, which an i64 cannot count.
        let span = i128::from(range.end_ms) - i128::from(range.start_ms) + 1;
        let buckets = if span > 0 { (span + i128::from(bucket_ms) - 1) / i128::from(bucket_ms) } else { 0 };
        if buckets > i128::from(MAX_BUCKETS) {
            return Err(AppError::BadRequest(format!(
                "at most {MAX_BUCKETS} buckets per chart, and {bucket_ms} ms buckets divide this range into \
                 {buckets}: ask for longer buckets or a shorter range"
            )));
        }
        Ok(self.store.reading_buckets(variable.id, range, bucket_ms).await?)
    }

    /// The last reading of a variable the permit reads.
    pub async fn last_reading(
        &self,
        permit: &Permit,
        variable: &Variable,
    ) -> Result<Option<tessera_core::Reading>, AppError> {
        require_permit(permit, Action::Read, &variable_target(variable), "last reading")?;
        Ok(self.writer.last_reading(variable.id).await?)
    }

    /// Readings of a variable the permit reads, within `range`, newest first.
    pub async fn readings(
        &self,
        permit: &Permit,
        variable: &Variable,
        range: tessera_store::TimeRange,
        page: tessera_store::Page,
    ) -> Result<tessera_store::Paged<tessera_core::Reading>, AppError> {
        require_permit(permit, Action::Read, &variable_target(variable), "readings")?;
        Ok(self.store.readings(variable.id, range, page).await?)
    }

    /// Readings of every variable of the collection or device the read permit names, newest first, at most
    /// `limit`.
    pub async fn readings_under(
        &self,
        permit: &Permit,
        range: tessera_store::TimeRange,
        limit: u64,
    ) -> Result<Vec<(tessera_core::DeviceId, tessera_core::Reading)>, AppError> {
        use tessera_core::Node;
        let filter = match permit.target().path() {
            [Node::Collection(collection)] => tessera_store::DeviceFilter::collection(*collection),
            [Node::Collection(_), Node::Device(device)] => tessera_store::DeviceFilter::device(*device),
            _ => return Err(permit_mismatch(permit, "readings of a collection or device")),
        };
        if permit.action() != Action::Read {
            return Err(permit_mismatch(permit, "readings of a collection or device"));
        }
        Ok(self.store.device_readings(permit.account(), &filter, range, limit).await?)
    }

    /// The messages queued for a device the permit reads, oldest first.
    pub async fn downlinks(&self, permit: &Permit, device: &Device) -> Result<Vec<tessera_store::Downlink>, AppError> {
        require_permit(permit, Action::Read, &device_target(device), "downlinks")?;
        Ok(self.store.downlinks(device.account, device.id).await?)
    }

    /// The device a committed live reading is of, to describe a reading its consumer was already allowed to read
    /// (the reading came from the writer, so its ids are trusted; `None` once the device is gone). From the live
    /// descriptions every consumer shares, kept current by the change events: one store read per device however
    /// many consumers follow it.
    pub async fn live_device(&self, account: AccountId, device: DeviceId) -> Option<Arc<Device>> {
        let read = async { self.store.device(account, device).await.map(Arc::new) };
        let device = self.live_devices.get_or_read(device, read).await.ok()?;
        (device.account == account).then_some(device)
    }

    /// The variable a committed live reading is of, as [`DataService::live_device`].
    pub async fn live_variable(&self, account: AccountId, variable: VariableId) -> Option<Arc<Variable>> {
        let read = async { self.store.variable(account, variable).await.map(Arc::new) };
        let variable = self.live_variables.get_or_read(variable, read).await.ok()?;
        (variable.account == account).then_some(variable)
    }

    /// Whether the store answers (the readiness probe).
    pub async fn store_answers(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Stores labelled series for the device `label` (a Ubidots device body, over HTTP or MQTT), creating the
    /// device and its variables on first use. Answers each variable's label with the number of dots stored; a
    /// refused series stores nothing.
    pub async fn write_device_series(
        &self,
        caller: &Caller,
        label: &Label,
        series: Vec<(Label, Vec<Dot>)>,
        wait: Wait,
    ) -> Result<Vec<(String, usize)>, AppError> {
        let (device, permit) = self.device_for_write(caller, label).await?;
        let mut resolved = Vec::with_capacity(series.len());
        for (variable_label, dots) in series {
            let variable =
                self.variable_for_write(&permit, &device, &variable_label, variable_label.as_str(), "").await?;
            resolved.push((variable, dots));
        }
        let stored = self.write_waiting(&[&permit], resolved, wait).await?;
        Ok(stored.into_iter().map(|(variable, dots)| (variable.label.to_string(), dots)).collect())
    }

    /// Stores one value of an existing variable (an AllThingsTalk asset's state, over HTTP or MQTT) of the device
    /// `device`, if the asset's profile allows it.
    pub async fn write_state(
        &self,
        caller: &Caller,
        device: tessera_core::DeviceId,
        asset: &Label,
        dot: Dot,
        wait: Wait,
    ) -> Result<(), AppError> {
        let (device, _) = self.device_by_id(caller, Action::Write, device).await?;
        let variable = self.variable_by_label(&device, asset).await?;
        let permit = caller.authorize(Action::Write, &variable_target(&variable))?;
        self.write_waiting(&[&permit], vec![(variable, vec![dot])], wait).await?;
        Ok(())
    }

    /// Stores dots in their variables through the batching writer and returns once they are durable, all of
    /// them or none, answering each variable with the number of its dots stored. Every variable must be covered by
    /// one of the write permits. The dots are moved into the readings, not copied: this is the ingest hot path.
    pub async fn write(
        &self,
        permits: &[&Permit],
        series: Vec<(Arc<Variable>, Vec<Dot>)>,
    ) -> Result<Vec<(Arc<Variable>, usize)>, AppError> {
        self.write_waiting(permits, series, Wait::Committed).await
    }

    /// As [`DataService::write`], returning when the dots are committed or, for a sender owed no answer, queued.
    pub async fn write_waiting(
        &self,
        permits: &[&Permit],
        series: Vec<(Arc<Variable>, Vec<Dot>)>,
        wait: Wait,
    ) -> Result<Vec<(Arc<Variable>, usize)>, AppError> {
        // One pass over what is to be stored, before any of it is: a permit for each variable; the one range of
        // timestamps every dialect shares (each parses its own and names the field), so no front end stores an
        // instant the others cannot give back; and the asset's profile, whichever dialect or protocol the value
        // comes through. One refused value refuses the whole write.
        if let Err(error) = check_values(permits, &series) {
            if matches!(error, AppError::BadRequest(_)) {
                self.refused_readings.add(series.iter().map(|(_, dots)| dots.len() as u64).sum());
            }
            return Err(error);
        }
        let received_at_ms = now_ms();
        let count = series.iter().map(|(_, dots)| dots.len()).sum();
        let mut readings = Vec::with_capacity(count);
        let mut origins = Vec::with_capacity(count);
        let mut stored = Vec::with_capacity(series.len());
        for (variable, dots) in series {
            let origin = Origin { account: variable.account, collection: variable.collection, device: variable.device };
            stored.push((variable.clone(), dots.len()));
            for dot in dots {
                readings.push(Reading {
                    variable: variable.id,
                    timestamp_ms: dot.timestamp_ms,
                    value: dot.value,
                    context: dot.context,
                    received_at_ms,
                });
                origins.push(origin);
            }
        }
        match wait {
            Wait::Committed => self.writer.write(readings, origins).await?,
            Wait::Queued => self.writer.enqueue(readings, origins).await?,
        }
        Ok(stored)
    }

    /// Deletes the readings of a variable in an inclusive range; needs a write permit on the variable.
    pub async fn delete_readings(
        &self,
        permit: &Permit,
        variable: &Variable,
        range: tessera_store::TimeRange,
    ) -> Result<u64, AppError> {
        require_permit(permit, Action::Write, &variable_target(variable), "delete readings")?;
        let deleted = self.store.delete_readings(variable.id, range).await;
        // Even after a failure: the store may have deleted them all the same.
        self.writer.readings_deleted(variable.id);
        deleted.map_err(|error| AppError::from_store("variable", error))
    }
}

/// One pass over what is to be stored, before any of it is (see [`DataService::write_waiting`]).
fn check_values(permits: &[&Permit], series: &[(Arc<Variable>, Vec<Dot>)]) -> Result<(), AppError> {
    for (variable, dots) in series {
        let target = variable_target(variable);
        if !permits.iter().any(|permit| permit.covers(Action::Write, &target)) {
            return Err(AppError::Internal(format!("no permit covers writing to variable {}", variable.id).into()));
        }
        let refused = |error: String| AppError::BadRequest(format!("variable '{}': {error}", variable.label));
        let profile = match &variable.profile {
            Some(profile) => Some(Profile::parse(profile).map_err(|error| AppError::Internal(error.into()))?),
            None => None,
        };
        for dot in dots {
            tessera_core::time::check_range(dot.timestamp_ms).map_err(|error| refused(error.to_string()))?;
            if let Some(profile) = &profile {
                profile.check(&dot.value.to_json()).map_err(refused)?;
            }
        }
    }
    Ok(())
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        AppError::from_store("resource", error)
    }
}

/// The narrowest store filter that still holds every device the caller may list, after the core's listing rule.
/// It only narrows the query: each listed item is authorized on its own as well. Scopes that do not name devices
/// by collection list nothing yet.
pub fn visible_devices(caller: &Caller) -> Result<Option<tessera_store::DeviceFilter>, tessera_core::Denial> {
    use tessera_store::DeviceFilter;
    let mut filter = match caller.authorize_listing()? {
        Scope::Account | Scope::AllCollections => DeviceFilter::default(),
        Scope::Collection(collection) => DeviceFilter::collection(collection),
        Scope::Device(device) => DeviceFilter::device(device),
        Scope::Team(_) | Scope::AllTeams => return Ok(None),
    };
    // A creator who reaches only some collections (a user, through teams) narrows the listing to those.
    if let tessera_core::Reach::Limited { collections, .. } = &caller.grant.creator_reach {
        let reachable: Vec<CollectionId> = collections.keys().copied().collect();
        filter.collections = Some(match filter.collections {
            Some(scoped) => scoped.into_iter().filter(|collection| reachable.contains(collection)).collect(),
            None => reachable,
        });
    }
    Ok(Some(filter))
}

#[cfg(test)]
mod tests {
    use tessera_core::{Rights, ServerKey, TokenKind};
    use tessera_store::{DeviceQuery, Page};

    use super::*;
    use crate::hub::Hub;
    use crate::tokens::{NewToken, TokenService};

    /// A data service over a bootstrapped in-memory store, and a caller that reads and writes the whole account (a
    /// token the API key minted), with a device of it.
    async fn service_caller_and_device() -> (DataService, Caller, Arc<Device>, Permit) {
        let store: Arc<dyn Store> = Arc::new(tessera_store::SqliteStore::open_in_memory().await.unwrap());
        let key = ServerKey::new(&[0; ServerKey::LEN]);
        let credentials = crate::bootstrap::bootstrap(store.as_ref(), &key).await.unwrap().unwrap();
        let tokens = TokenService::new(store.clone(), key, 100, crate::audit::for_tests(&store).await);
        let api_key = tokens.verify(credentials.api_key.expose(), None).await.unwrap();
        let new = NewToken::new(TokenKind::Account, Scope::Account, Rights::ReadWrite, "everything".into(), None);
        let (_, secret) = tokens.mint(&api_key, new).await.unwrap();
        let caller = tokens.verify(secret.expose(), None).await.unwrap();
        let hub = Arc::new(Hub::new(16, crate::peers::Peers::none()));
        let (writer, _) =
            ReadingWriter::start(store.clone(), hub, crate::last_readings::LastReadings::new(true, 1_000), 64, 1_000);
        let data = DataService::new(store, writer, 100);
        let (device, permit) = data.device_for_write(&caller, &Label::parse("meter").unwrap()).await.unwrap();
        (data, caller, device, permit)
    }

    #[tokio::test]
    async fn a_device_overview_takes_a_read_permit_for_its_collection() {
        let (data, caller, device, _) = service_caller_and_device().await;
        let collection = Target::collection(caller.account(), device.collection);
        let permit = caller.authorize(Action::Read, &collection).unwrap();
        let listed = data.device_overview(&permit, &DeviceQuery::default(), Page::ALL).await.unwrap();
        assert_eq!(listed.items.iter().map(|device| device.id).collect::<Vec<_>>(), vec![device.id]);
        for wrong in [
            caller.authorize(Action::Write, &collection).unwrap(),
            caller.authorize(Action::Read, &device_target(&device)).unwrap(),
        ] {
            let refused = data.device_overview(&wrong, &DeviceQuery::default(), Page::ALL).await;
            assert!(matches!(refused, Err(AppError::Internal(_))), "{wrong:?}: {refused:?}");
        }
    }

    #[tokio::test]
    async fn charts_are_bounded_and_variables_come_with_their_last_reading() {
        let (data, caller, device, permit) = service_caller_and_device().await;
        let level =
            data.variable_for_write(&permit, &device, &Label::parse("level").unwrap(), "level", "").await.unwrap();
        let dot = |timestamp_ms, value| Dot { timestamp_ms, value: Value::Number(value), context: Default::default() };
        data.write(&[&permit], vec![(level.clone(), vec![dot(1_000, 1.0), dot(2_000, 3.0)])]).await.unwrap();
        let found = data.variables_with_last(&caller, &[device.id]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.as_ref().map(|reading| reading.timestamp_ms), Some(2_000));

        let read = caller.authorize(Action::Read, &variable_target(&level)).unwrap();
        let day = tessera_store::TimeRange { start_ms: 0, end_ms: 86_400_000 - 1 };
        let buckets = data.reading_buckets(&read, &level, day, 43_200).await.expect("exactly 2 000 buckets");
        assert_eq!((buckets.len(), buckets[0].count, buckets[0].mean), (1, 2, 2.0));
        match data.reading_buckets(&read, &level, day, 43_199).await {
            Err(AppError::BadRequest(message)) => assert!(message.contains("at most 2000 buckets"), "{message}"),
            other => panic!("2 001 buckets were not refused: {other:?}"),
        }
        for bucket_ms in [0, -1] {
            assert!(matches!(data.reading_buckets(&read, &level, day, bucket_ms).await, Err(AppError::BadRequest(_))));
        }
        let too_wide = data.reading_buckets(&read, &level, tessera_store::TimeRange::ALL, i64::MAX).await;
        assert!(matches!(too_wide, Err(AppError::BadRequest(_))), "{too_wide:?}");
        let refused = data.reading_buckets(&permit, &level, day, 43_200).await;
        assert!(matches!(refused, Err(AppError::Internal(_))), "a write permit for the device: {refused:?}");
    }
}
