//! The seed chain's real wasm plugins against the recording fake kernel: no
//! root needed, and the exact sequence of kernel calls for ADD and its mirror
//! image for DEL can be asserted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cniwasm_host_api::kernel::{
    Firewall, Kernel, KernelError, KernelErrorKind, LinkInfo, Namespace, NftMatch, NftSelector,
    NftValue, Owner, PortMapSpec, SpoofCheckSpec,
};
use cniwasm_host_api::policy::Policy;
use cniwasm_host_api::testing::{CallKind, KernelCall, Recorder, RecordingKernel};
use cniwasm_runtime::config::parse_list_file;
use cniwasm_runtime::{Attachment, KernelFactory, Runtime, RuntimeOptions};
use ipnet::IpNet;
use serde_json::json;

/// Hands out recording kernels and keeps their recorders for the test.
#[derive(Default)]
struct RecordingFactory {
    recorders: Mutex<Vec<Recorder>>,
}

impl KernelFactory for RecordingFactory {
    fn open(&self, _netns: Option<&Path>) -> Result<Kernel, KernelError> {
        let (kernel, recorder) = RecordingKernel::new();
        // The fake has no sysctl until one is set; bridge reads this one.
        recorder.set_sysctl(Namespace::Host, "net/ipv4/ip_forward", "0");
        self.recorders.lock().unwrap().push(recorder);
        Ok(kernel)
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn runtime(dir: &Path, factory: Arc<RecordingFactory>) -> Runtime {
    runtime_with(dir, factory)
}

fn attachment(dir: &Path) -> Attachment {
    // The fake never opens the namespace, but ADD checks that the path exists.
    let netns = dir.join("netns");
    std::fs::write(&netns, "").unwrap();
    Attachment {
        container_id: "recorded".into(),
        netns: Some(netns),
        ifname: "eth0".into(),
        args: Vec::new(),
        capability_args: json!({"portMappings": [{"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]})
            .as_object()
            .unwrap()
            .clone(),
    }
}

/// The kinds of the calls that change the kernel, in order.
fn changes(recorder: &Recorder) -> Vec<CallKind> {
    let reads = [
        CallKind::GetLink,
        CallKind::ListAddresses,
        CallKind::ListRoutes,
        CallKind::SysctlGet,
        CallKind::RouteDevice,
    ];
    recorder
        .calls()
        .iter()
        .map(KernelCall::kind)
        .filter(|kind| !reads.contains(kind))
        .collect()
}

/// Returns the index of the first `kind` in `kinds`; panics when there is none.
fn index_of(kinds: &[CallKind], kind: CallKind) -> usize {
    kinds
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {kinds:?}"))
}

#[test]
fn seed_add_makes_expected_kernel_calls() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();

    let result = runtime.add(&list, &attachment(dir.path())).unwrap();

    assert_eq!(result["ips"][0]["address"], json!("10.244.10.2/24"));
    let recorder = &factory.recorders.lock().unwrap()[0];
    let kinds = changes(recorder);
    let position = |kind: CallKind| index_of(&kinds, kind);
    assert!(position(CallKind::EnsureBridge) < position(CallKind::CreateVeth));
    assert!(position(CallKind::CreateVeth) < position(CallKind::AddAddress));
    assert!(position(CallKind::AddAddress) < position(CallKind::AddRoute));
    assert!(position(CallKind::AddMasquerade) < position(CallKind::AddPortMappings));
    assert_eq!(kinds.last(), Some(&CallKind::AddPortMappings));

    assert_eq!(
        recorder.addresses(Namespace::Container, "eth0"),
        vec!["10.244.10.2/24".parse().unwrap()]
    );
    assert_eq!(
        recorder.addresses(Namespace::Host, "mynet"),
        vec!["10.244.10.1/24".parse().unwrap()]
    );
    let routes = recorder.routes(Namespace::Container);
    assert!(
        routes
            .iter()
            .any(|route| route.dst.to_string() == "0.0.0.0/0"
                && route.gateway.map(|gw| gw.to_string()).as_deref() == Some("10.244.10.1")),
        "{routes:?}"
    );
}

#[test]
fn seed_del_mirrors_add() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();
    let attachment = attachment(dir.path());
    runtime.add(&list, &attachment).unwrap();

    runtime.del(&list, &attachment).unwrap();

    let recorders = factory.recorders.lock().unwrap();
    let kinds = changes(&recorders[1]);
    assert_eq!(
        kinds,
        vec![
            CallKind::RemovePortMappings,
            CallKind::DeleteLink,
            CallKind::RemoveMasquerade,
            CallKind::RemoveNftMasquerade
        ],
        "DEL runs portmap, then bridge: container link, IPAM, masquerade of both backends"
    );
    assert!(
        std::fs::read_dir(dir.path().join("cache/results"))
            .unwrap()
            .next()
            .is_none(),
        "the cache file was not removed"
    );
}

#[test]
fn failed_route_rolls_back_everything() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();

    // A factory whose kernels fail the first route, after IPAM allocated.
    struct FailingRoute(Arc<RecordingFactory>);
    impl KernelFactory for FailingRoute {
        fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
            let kernel = self.0.open(netns)?;
            let recorders = self.0.recorders.lock().unwrap();
            recorders.last().unwrap().fail_call(
                CallKind::AddRoute,
                1,
                cniwasm_host_api::kernel::KernelErrorKind::Failed,
            );
            Ok(kernel)
        }
    }
    let failing = runtime_with(dir.path(), Arc::new(FailingRoute(factory.clone())));

    let error = failing.add(&list, &attachment(dir.path())).unwrap_err();

    assert!(error.to_string().contains("scripted failure"), "{error}");
    let recorder = &factory.recorders.lock().unwrap()[0];
    assert!(
        recorder.link(Namespace::Host, "mynet").is_none(),
        "the bridge this ADD created is removed"
    );
    assert!(
        recorder.link(Namespace::Container, "eth0").is_none(),
        "the container link is removed"
    );
    assert!(
        recorder
            .masquerades(&cniwasm_host_api::kernel::Owner {
                network: "mynet".into(),
                container_id: "recorded".into(),
                ifname: "eth0".into(),
            })
            .is_empty()
    );
    let ipam: Vec<_> = std::fs::read_dir(dir.path().join("ipam/mynet"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(ipam.is_empty(), "reservations left: {ipam:?}");
}

fn runtime_with(dir: &Path, factory: Arc<dyn KernelFactory>) -> Runtime {
    runtime_with_policy(dir, factory, Policy::default())
}

fn runtime_with_policy(dir: &Path, factory: Arc<dyn KernelFactory>, policy: Policy) -> Runtime {
    let plugins = repo_root().join("plugins-wasm/out");
    assert!(
        plugins.join("bridge.wasm").is_file(),
        "wasm plugins not built: run `make build` first"
    );
    let options = RuntimeOptions {
        plugin_path: vec![plugins],
        cache_dir: dir.join("cache"),
        ipam_data_dir: dir.join("ipam"),
        compile_cache: Some(repo_root().join("target/cniwasm-compile-cache")),
        policy: Arc::new(policy),
        wasm_only: false,
    };
    Runtime::new(options, factory).unwrap()
}

/// Returns a runtime whose policy allows everything and writes its audit
/// log to `<dir>/audit.log`.
fn audited_runtime(dir: &Path, factory: Arc<dyn KernelFactory>) -> Runtime {
    let audit_log = dir.join("audit.log");
    let policy = Policy::from_json(&json!({"auditLog": audit_log}).to_string()).unwrap();
    runtime_with_policy(dir, factory, policy)
}

/// Returns the audit records of host-local's `ipam-store.read-files` calls.
fn ipam_store_reads(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["plugin"] == "host-local")
        .filter(|record| record["operation"] == "ipam-store.read-files")
        .collect()
}

/// host-local lists its reservations with one `ipam-store.read-files` call
/// per command. A subdirectory and a file above the call's size limit,
/// named like free addresses, are skipped, and the allocation moves past
/// them.
#[test]
fn host_local_skips_odd_entries() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ipam/mynet");
    std::fs::create_dir_all(state.join("10.244.10.2")).unwrap();
    std::fs::write(state.join("10.244.10.2/inner"), "recorded\r\neth0").unwrap();
    let large = vec![b'x'; cniwasm_host_api::plugin_host::MAX_IPAM_STORE_FILE_BYTES as usize + 1];
    std::fs::write(state.join("10.244.10.3"), large).unwrap();
    let runtime = audited_runtime(dir.path(), Arc::new(RecordingFactory::default()));
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();
    let attachment = attachment(dir.path());

    let result = runtime.add(&list, &attachment).unwrap();

    assert_eq!(result["ips"][0]["address"], json!("10.244.10.4/24"));
    let reservation = std::fs::read_to_string(state.join("10.244.10.4")).unwrap();
    assert_eq!(reservation, "recorded\r\neth0");
    let reads = ipam_store_reads(dir.path());
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(reads[0]["decision"], "allow");
    assert_eq!(reads[0]["outcome"], "ok");

    runtime.del(&list, &attachment).unwrap();

    assert!(
        !state.join("10.244.10.4").exists(),
        "DEL kept the reservation"
    );
    assert!(state.join("10.244.10.2/inner").is_file());
    assert!(state.join("10.244.10.3").is_file());
    assert_eq!(ipam_store_reads(dir.path()).len(), 2);
}

/// An ADD for an attachment that already has a reservation finds it
/// through `ipam-store.read-files` and fails as the reference host-local
/// does, naming the reserved address.
#[test]
fn host_local_finds_existing_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ipam/mynet");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("10.244.10.7"), "recorded\r\neth0").unwrap();
    std::fs::write(state.join("10.244.10.8"), "other\r\neth0").unwrap();
    let runtime = audited_runtime(dir.path(), Arc::new(RecordingFactory::default()));
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();

    let error = runtime.add(&list, &attachment(dir.path())).unwrap_err();

    let message = error.to_cni_error().msg;
    assert!(
        message.contains(
            "10.244.10.7 has been allocated to recorded, duplicate allocation is not allowed"
        ),
        "{message}"
    );
    assert!(state.join("10.244.10.8").is_file());
    assert!(!ipam_store_reads(dir.path()).is_empty());
}

/// Hands out recording kernels whose container has `lo`, which the chain
/// below tunes and which survives DEL.
struct LoopbackFactory(Arc<RecordingFactory>);

impl KernelFactory for LoopbackFactory {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
        let kernel = self.0.open(netns)?;
        let lo = LinkInfo {
            name: "lo".into(),
            index: 1,
            kind: String::new(),
            mac: "00:00:00:00:00:00".into(),
            mtu: 65536,
            up: false,
            oper_state: "unknown".into(),
            master: None,
            promisc: false,
            allmulti: false,
            tx_queue_len: 1000,
        };
        let recorders = self.0.recorders.lock().unwrap();
        recorders.last().unwrap().add_link(Namespace::Container, lo);
        Ok(kernel)
    }
}

/// Tuning saves the values it changes through the host's `state` interface
/// at ADD, and DEL sets them again and drops the saved blob.
#[test]
fn tuning_del_restores_saved() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime_with(dir.path(), Arc::new(LoopbackFactory(factory.clone())));
    let list_path = dir.path().join("tuned.conflist");
    let list = json!({"cniVersion": "1.0.0", "name": "tuned", "plugins": [
        {"type": "loopback"},
        {"type": "tuning", "mtu": 9000, "allmulti": true, "txQLen": 2000}
    ]});
    std::fs::write(&list_path, list.to_string()).unwrap();
    let list = parse_list_file(&list_path).unwrap();
    let attachment = Attachment {
        ifname: "lo".into(),
        capability_args: Default::default(),
        ..attachment(dir.path())
    };

    runtime.add(&list, &attachment).unwrap();

    let saved = dir
        .path()
        .join("cache/plugin-state/tuned-recorded-lo/tuning");
    let text = std::fs::read_to_string(&saved).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        json!({"mtu": 65536, "allmulti": false, "txQueueLen": 1000})
    );
    let tuned = factory.recorders.lock().unwrap()[0]
        .link(Namespace::Container, "lo")
        .unwrap();
    assert_eq!(
        (tuned.mtu, tuned.allmulti, tuned.tx_queue_len),
        (9000, true, 2000)
    );

    runtime.del(&list, &attachment).unwrap();

    let recorders = factory.recorders.lock().unwrap();
    let restores = recorders[1].calls_of(CallKind::ConfigureLink);
    let restored = restores.iter().find_map(|call| match call {
        KernelCall::ConfigureLink { settings, .. } if settings.mtu.is_some() => Some(settings),
        _ => None,
    });
    let restored = restored.expect("DEL restores lo");
    assert_eq!(restored.mtu, Some(65536));
    assert_eq!(restored.allmulti, Some(false));
    assert_eq!(restored.tx_queue_len, Some(1000));
    assert_eq!(restored.mac, None);
    assert!(!saved.exists(), "the saved blob outlived DEL");
    assert!(!saved.parent().unwrap().exists());
}

/// The firewall requests accept rules for the bridge's address. DEL removes
/// them by the cached result, which the host takes as the attachment's
/// addresses, since DEL's fresh fake kernel has no container address.
#[test]
fn firewall_follows_result() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let list_path = dir.path().join("fw.conflist");
    let list = json!({"cniVersion": "1.0.0", "name": "fw", "plugins": [
        {"type": "bridge", "bridge": "fwbr", "ipam": {"type": "host-local", "subnet": "10.244.90.0/24"}},
        {"type": "firewall", "iptablesAdminChainName": "FW-ADMIN"}
    ]});
    std::fs::write(&list_path, list.to_string()).unwrap();
    let list = parse_list_file(&list_path).unwrap();
    let attachment = attachment(dir.path());
    let address: std::net::IpAddr = "10.244.90.2".parse().unwrap();

    runtime.add(&list, &attachment).unwrap();
    runtime.del(&list, &attachment).unwrap();

    let recorders = factory.recorders.lock().unwrap();
    assert_eq!(recorders[0].forward_accepts(), [address]);
    assert_eq!(recorders[0].admin_chains(), ["FW-ADMIN"]);
    assert_eq!(
        recorders[1].calls_of(CallKind::RemoveForwardRules),
        [KernelCall::RemoveForwardRules {
            addresses: vec![address]
        }]
    );
}

/// Writes a one-bridge list named `vlannet` with the bridge options
/// `options`, and parses it.
fn vlan_list(dir: &Path, options: serde_json::Value) -> cniwasm_runtime::config::NetworkConfigList {
    let mut bridge = json!({"type": "bridge", "bridge": "vlanbr",
        "ipam": {"type": "host-local", "subnet": "10.244.91.0/24"}});
    for (key, value) in options.as_object().unwrap() {
        bridge[key] = value.clone();
    }
    let list = json!({"cniVersion": "1.0.0", "name": "vlannet", "plugins": [bridge]});
    let path = dir.join("vlan.conflist");
    std::fs::write(&path, list.to_string()).unwrap();
    parse_list_file(&path).unwrap()
}

/// Runs ADD of `options` and returns the recorder, with the host veth's
/// VLANs as (vid, pvid, untagged).
fn vlans_after_add(options: serde_json::Value) -> Vec<(u16, bool, bool)> {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());

    let result = runtime
        .add(&vlan_list(dir.path(), options), &attachment(dir.path()))
        .unwrap();

    let recorder = &factory.recorders.lock().unwrap()[0];
    let bridge = recorder.calls_of(CallKind::EnsureBridge);
    assert!(
        matches!(&bridge[..], [KernelCall::EnsureBridge { spec }] if spec.vlan_filtering),
        "{bridge:?}"
    );
    let veth = result["interfaces"][1]["name"].as_str().unwrap();
    recorder
        .port_vlans(veth)
        .iter()
        .map(|entry| (entry.vid, entry.pvid, entry.untagged))
        .collect()
}

#[test]
fn trunk_with_native_vlan() {
    let vlans = vlans_after_add(json!({"vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 210}]}));

    let mut expected = vec![(1, true, true), (101, false, false)];
    expected.extend((200..=210).map(|vid| (vid, false, false)));
    assert_eq!(vlans, expected);
}

#[test]
fn vlan_replaces_default() {
    let vlans = vlans_after_add(json!({"vlan": 100, "preserveDefaultVlan": false}));
    assert_eq!(vlans, [(100, true, true)]);
}

#[test]
fn vlan_preserves_default() {
    let vlans = vlans_after_add(json!({"vlan": 100, "preserveDefaultVlan": true}));
    // The PVID moves to 100; VLAN 1 stays, untagged.
    assert_eq!(vlans, [(1, false, true), (100, true, true)]);
}

/// A failed VLAN setup removes the veth and the bridge this ADD created;
/// DEL after a good ADD deletes the container end and frees the address.
#[test]
fn vlan_failure_and_del_clean_up() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let list = vlan_list(dir.path(), json!({"vlan": 100}));

    struct FailingVlans(Arc<RecordingFactory>);
    impl KernelFactory for FailingVlans {
        fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
            let kernel = self.0.open(netns)?;
            let recorders = self.0.recorders.lock().unwrap();
            let failed = cniwasm_host_api::kernel::KernelErrorKind::Failed;
            recorders
                .last()
                .unwrap()
                .fail_call(CallKind::SetPortVlans, 1, failed);
            Ok(kernel)
        }
    }
    let failing = runtime_with(dir.path(), Arc::new(FailingVlans(factory.clone())));

    let error = failing.add(&list, &attachment(dir.path())).unwrap_err();

    assert!(error.to_string().contains("VLANs"), "{error}");
    let recorder = factory.recorders.lock().unwrap()[0].clone();
    assert!(
        recorder.links(Namespace::Host).is_empty(),
        "{:?}",
        recorder.links(Namespace::Host)
    );
    assert!(recorder.link(Namespace::Container, "eth0").is_none());

    let working = runtime(dir.path(), factory.clone());
    working.add(&list, &attachment(dir.path())).unwrap();
    working.del(&list, &attachment(dir.path())).unwrap();
    let recorders = factory.recorders.lock().unwrap();
    let deleted = recorders.last().unwrap().calls_of(CallKind::DeleteLink);
    assert_eq!(
        deleted,
        [KernelCall::DeleteLink {
            ns: Namespace::Container,
            name: "eth0".into()
        }]
    );
    let reservations = std::fs::read_dir(dir.path().join("ipam/vlannet")).unwrap();
    let left: Vec<_> = reservations
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(left.is_empty(), "reservations left: {left:?}");
}

/// Wraps the recording firewall, counts settles, and fails the first
/// `failures` of them as a NAT commit deferred to the end of DEL can fail.
struct CountedSettle {
    inner: Box<dyn Firewall + Send>,
    settles: Arc<AtomicUsize>,
    failures: usize,
}

impl Firewall for CountedSettle {
    fn add_port_mappings(&mut self, owner: &Owner, spec: &PortMapSpec) -> Result<(), KernelError> {
        self.inner.add_port_mappings(owner, spec)
    }

    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &PortMapSpec,
    ) -> Result<(), KernelError> {
        self.inner.check_port_mappings(owner, spec)
    }

    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError> {
        self.inner.remove_port_mappings(owner)
    }

    fn add_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        self.inner.add_masquerade(owner, address)
    }

    fn check_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        self.inner.check_masquerade(owner, address)
    }

    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError> {
        self.inner.remove_masquerade(owner)
    }

    fn settle(&mut self) -> Result<(), KernelError> {
        self.inner.settle()?;
        let settle = self.settles.fetch_add(1, Ordering::SeqCst) + 1;
        match settle <= self.failures {
            true => Err(KernelError::new(
                KernelErrorKind::Failed,
                Namespace::Host,
                r#"remove masquerade of network "mynet" container "recorded""#,
                "iptables-restore --noflush failed",
            )),
            false => Ok(()),
        }
    }
}

/// Hands out recording kernels whose firewall counts settles once
/// `failures` is set: `Some(n)` fails the first n settles after that.
#[derive(Default)]
struct SettleFactory {
    recording: RecordingFactory,
    settles: Arc<AtomicUsize>,
    failures: Mutex<Option<usize>>,
}

impl KernelFactory for SettleFactory {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
        let mut kernel = self.recording.open(netns)?;
        if let Some(failures) = *self.failures.lock().unwrap() {
            kernel.firewall = Box::new(CountedSettle {
                inner: kernel.firewall,
                settles: self.settles.clone(),
                failures,
            });
        }
        Ok(kernel)
    }
}

/// DEL waits for the kernel once, after every plugin ran, so that the NAT
/// removals of portmap and bridge commit together. When that wait fails,
/// DEL fails with the removal named and keeps the cache, and the retry
/// succeeds and removes it.
#[test]
fn del_settles_once_and_keeps_cache_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(SettleFactory::default());
    let runtime = runtime_with(dir.path(), factory.clone());
    let list = parse_list_file(&repo_root().join("examples/mynet.conflist")).unwrap();
    let attachment = attachment(dir.path());
    runtime.add(&list, &attachment).unwrap();
    *factory.failures.lock().unwrap() = Some(1);

    let error = runtime.del(&list, &attachment).unwrap_err().to_cni_error();

    assert_eq!(error.code, 999, "{error:?}");
    assert!(
        error.msg.contains("remove masquerade of network"),
        "{error:?}"
    );
    assert_eq!(factory.settles.load(Ordering::SeqCst), 1);
    let kinds = changes(&factory.recording.recorders.lock().unwrap()[1]);
    assert!(kinds.contains(&CallKind::RemovePortMappings), "{kinds:?}");
    assert!(kinds.contains(&CallKind::RemoveMasquerade), "{kinds:?}");
    let cached = || {
        std::fs::read_dir(dir.path().join("cache/results"))
            .unwrap()
            .count()
    };
    assert_eq!(cached(), 1, "the cache must stay for the retry");

    runtime.del(&list, &attachment).unwrap();
    assert_eq!(factory.settles.load(Ordering::SeqCst), 2);
    assert_eq!(cached(), 0);
}

/// Writes a one-bridge list named `spoofnet` with `macspoofchk` and the
/// IPAM section `ipam`, and parses it.
fn spoof_list(dir: &Path, ipam: serde_json::Value) -> cniwasm_runtime::config::NetworkConfigList {
    let bridge = json!({"type": "bridge", "bridge": "spoofbr", "macspoofchk": true, "ipam": ipam});
    let list = json!({"cniVersion": "1.0.0", "name": "spoofnet", "plugins": [bridge]});
    let path = dir.join("spoof.conflist");
    std::fs::write(&path, list.to_string()).unwrap();
    parse_list_file(&path).unwrap()
}

/// Returns an IPAM section that host-local serves.
fn spoof_ipam() -> serde_json::Value {
    json!({"type": "host-local", "subnet": "10.244.92.0/24"})
}

fn spoof_owner() -> Owner {
    Owner {
        network: "spoofnet".into(),
        container_id: "recorded".into(),
        ifname: "eth0".into(),
    }
}

/// ADD installs the check for the host veth and the container MAC of its
/// result, after connecting the veth and before IPAM configures addresses.
#[test]
fn macspoofchk_add_installs_check() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let list = spoof_list(dir.path(), spoof_ipam());

    let result = runtime.add(&list, &attachment(dir.path())).unwrap();

    let recorder = &factory.recorders.lock().unwrap()[0];
    let expected = SpoofCheckSpec {
        host_link: result["interfaces"][1]["name"].as_str().unwrap().into(),
        mac: result["interfaces"][2]["mac"].as_str().unwrap().into(),
    };
    assert_eq!(recorder.spoof_check(&spoof_owner()), Some(expected));
    let kinds = changes(recorder);
    let position = |kind: CallKind| index_of(&kinds, kind);
    assert!(position(CallKind::ConfigureLink) < position(CallKind::AddSpoofCheck));
    assert!(position(CallKind::AddSpoofCheck) < position(CallKind::AddAddress));
    assert_eq!(recorder.calls_of(CallKind::AddSpoofCheck).len(), 1);
}

/// When IPAM fails after the check is in, the bridge removes the check
/// itself before it deletes the container link, and nothing stays.
#[test]
fn macspoofchk_removed_when_ipam_fails() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    // host-local fails ADD without a subnet or ranges.
    let list = spoof_list(dir.path(), json!({"type": "host-local"}));

    let error = runtime.add(&list, &attachment(dir.path())).unwrap_err();

    assert!(error.to_string().contains("missing \"subnet\""), "{error}");
    let recorder = &factory.recorders.lock().unwrap()[0];
    assert_eq!(recorder.spoof_check(&spoof_owner()), None);
    let calls = recorder.calls();
    let added = calls
        .iter()
        .position(|call| call.kind() == CallKind::AddSpoofCheck);
    let removed = calls.iter().position(|call| {
        *call
            == KernelCall::RemoveSpoofCheck {
                owner: spoof_owner(),
            }
    });
    let container_deleted = calls.iter().position(|call| {
        *call
            == KernelCall::DeleteLink {
                ns: Namespace::Container,
                name: "eth0".into(),
            }
    });
    let (Some(added), Some(removed), Some(container_deleted)) = (added, removed, container_deleted)
    else {
        panic!("a spoof check add, its removal or the link deletion is missing: {calls:?}");
    };
    assert!(added < removed, "{calls:?}");
    assert!(
        removed < container_deleted,
        "the bridge's own undo did not remove the check first: {calls:?}"
    );
    assert!(recorder.link(Namespace::Container, "eth0").is_none());
}

/// DEL removes the check after the container link, also when the
/// container's namespace is gone.
#[test]
fn macspoofchk_del_removes_check() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let list = spoof_list(dir.path(), spoof_ipam());
    let attachment = attachment(dir.path());
    runtime.add(&list, &attachment).unwrap();

    runtime.del(&list, &attachment).unwrap();
    let without_netns = Attachment {
        netns: None,
        ..attachment
    };
    runtime.del(&list, &without_netns).unwrap();

    let recorders = factory.recorders.lock().unwrap();
    assert_eq!(
        changes(&recorders[1]),
        [CallKind::DeleteLink, CallKind::RemoveSpoofCheck]
    );
    assert_eq!(
        recorders[1].calls_of(CallKind::RemoveSpoofCheck),
        [KernelCall::RemoveSpoofCheck {
            owner: spoof_owner()
        }]
    );
    assert_eq!(changes(&recorders[2]), [CallKind::RemoveSpoofCheck]);
}

/// Returns bridge and portmap with the nftables backends, and `portmap`'s
/// extra keys.
fn nft_list(dir: &Path, portmap: serde_json::Value) -> cniwasm_runtime::config::NetworkConfigList {
    let mut portmap_entry = json!({"type": "portmap", "backend": "nftables",
        "capabilities": {"portMappings": true}});
    for (key, value) in portmap.as_object().unwrap() {
        portmap_entry[key] = value.clone();
    }
    let list = json!({"cniVersion": "1.0.0", "name": "nftnet", "plugins": [
        {"type": "bridge", "bridge": "nftbr", "isGateway": true, "ipMasq": true,
         "ipMasqBackend": "nftables",
         "ipam": {"type": "host-local", "subnet": "10.244.93.0/24"}},
        portmap_entry]});
    let path = dir.join("nft.conflist");
    std::fs::write(&path, list.to_string()).unwrap();
    parse_list_file(&path).unwrap()
}

fn nft_owner() -> Owner {
    Owner {
        network: "nftnet".into(),
        container_id: "recorded".into(),
        ifname: "eth0".into(),
    }
}

/// With both nftables backends, ADD masquerades through `nft-nat` with
/// the result's addresses and maps the port with typed conditions. No
/// iptables rule is made, and DEL removes both.
#[test]
fn nft_backends_add_and_del() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let conditions = json!({"conditionsV4": ["ip", "daddr", "!=", "10.96.0.0/12"]});
    let list = nft_list(dir.path(), conditions);
    let attachment = attachment(dir.path());

    runtime.add(&list, &attachment).unwrap();

    let recorder = factory.recorders.lock().unwrap()[0].clone();
    let address: IpNet = "10.244.93.2/24".parse().unwrap();
    assert_eq!(recorder.nft_masquerade(&nft_owner()), vec![address]);
    let specs = recorder.nft_port_mappings(&nft_owner());
    assert_eq!(specs.len(), 1, "{specs:?}");
    assert_eq!(specs[0].container_address, address);
    assert!(specs[0].snat);
    let expected = NftMatch {
        selector: NftSelector::Payload {
            protocol: "ip",
            field: "daddr",
        },
        negated: true,
        value: NftValue::Prefix("10.96.0.0/12".parse().unwrap()),
    };
    assert_eq!(specs[0].conditions, vec![expected]);
    let kinds = changes(&recorder);
    assert!(!kinds.contains(&CallKind::AddMasquerade), "{kinds:?}");
    assert!(!kinds.contains(&CallKind::AddPortMappings), "{kinds:?}");
    assert_eq!(
        kinds.last(),
        Some(&CallKind::AddNftPortMappings),
        "{kinds:?}"
    );
    // The fake has no host route to the container, so the route_localnet
    // lookup finds no device and sets nothing, as the reference does.
    let calls = recorder.calls();
    let lookup = KernelCall::RouteDevice {
        destination: address.addr(),
    };
    assert_eq!(calls.last(), Some(&lookup), "{calls:?}");

    runtime.del(&list, &attachment).unwrap();

    let recorders = factory.recorders.lock().unwrap();
    let kinds = changes(&recorders[1]);
    assert_eq!(
        kinds,
        vec![
            CallKind::RemoveNftPortMappings,
            CallKind::DeleteLink,
            CallKind::RemoveMasquerade,
            CallKind::RemoveNftMasquerade
        ]
    );
}

/// An nftables condition that would jump elsewhere is rejected before any
/// kernel call, the port-mapping ADD fails with the value named, and the
/// runtime's rollback leaves no rules.
#[test]
fn nft_condition_injection_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(RecordingFactory::default());
    let runtime = runtime(dir.path(), factory.clone());
    let conditions = json!({"conditionsV4": ["ip", "daddr", "10.0.0.1", "jump", "KUBE-SERVICES"]});
    let list = nft_list(dir.path(), conditions);

    let error = runtime
        .add(&list, &attachment(dir.path()))
        .unwrap_err()
        .to_cni_error();

    assert!(error.msg.contains("\"jump\""), "{error:?}");
    let recorders = factory.recorders.lock().unwrap();
    let recorder = &recorders[0];
    assert!(recorder.calls_of(CallKind::AddNftPortMappings).is_empty());
    assert!(recorder.nft_port_mappings(&nft_owner()).is_empty());
    assert!(
        recorder.nft_masquerade(&nft_owner()).is_empty(),
        "the bridge's masquerade was not rolled back"
    );
}
