//! Supervisor tests with fake VMMs (shell scripts that follow the process contract); no KVM.

use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex as StdMutex;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    kernel: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel.elf");
        std::fs::write(&kernel, b"not really a kernel").unwrap();
        Self { dir, kernel }
    }

    /// A fake `sakshi-vmm`: a shell script; `$6` is the events fd.
    fn vmm(&self, body: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("fake-vmm-{}", uuid::Uuid::new_v4()));
        let script = format!("#!/bin/sh\nEV=/proc/self/fd/$6\nCONFIG=$2\nSOCK=$4\n{body}\n");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn supervisor(&self, vmm: PathBuf, measurer: Arc<dyn BootMeasurer>) -> Supervisor {
        let mut cfg = SupervisorConfig::new(vmm, self.runtime());
        cfg.stop_timeout = Duration::from_secs(2);
        cfg.control_timeout = Duration::from_secs(2);
        Supervisor::new(cfg, measurer).unwrap()
    }

    fn spec(&self, cmdline: &str) -> VmSpec {
        VmSpec::new(&self.kernel, cmdline, 128)
    }

    fn runtime_entries(&self) -> usize {
        std::fs::read_dir(self.runtime()).map_or(0, |d| d.count())
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn handles_and_events_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Supervisor>();
    send_sync::<VmEvent>();
    send_sync::<StartError>();
    send_sync::<Arc<dyn BootMeasurer>>();
}

fn drain(rx: &mpsc::Receiver<VmEvent>) -> Vec<VmEvent> {
    rx.try_iter().collect()
}

#[test]
fn create_emits_created_and_destroy_removes_runtime_dir() {
    let fx = Fixture::new();
    let sup = fx.supervisor(fx.vmm("exit 0"), Arc::new(NoopMeasurer));
    let rx = sup.subscribe();
    let id = sup.create(fx.spec("exit=halt")).unwrap();
    let events = drain(&rx);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].state, VmState::Created);
    assert_eq!(events[0].vm_id, id);
    assert!(fx.runtime().join(id.to_string()).is_dir());
    assert_eq!(sup.list().len(), 1);
    sup.destroy(&id).unwrap();
    assert_eq!(fx.runtime_entries(), 0);
    assert!(sup.list().is_empty());
    assert!(matches!(sup.show(&id), Err(UnknownVm(_))));
}

#[test]
fn invalid_spec_creates_nothing() {
    let fx = Fixture::new();
    let sup = fx.supervisor(fx.vmm("exit 0"), Arc::new(NoopMeasurer));
    let mut spec = fx.spec("");
    spec.kernel = fx.dir.path().join("missing");
    assert!(matches!(
        sup.create(spec),
        Err(CreateError::Spec(crate::ConfigError::FileMissing { .. }))
    ));
    assert_eq!(fx.runtime_entries(), 0);
    assert!(sup.list().is_empty());
}

#[test]
fn operations_in_the_wrong_state_are_typed_errors() {
    let fx = Fixture::new();
    let sup = fx.supervisor(fx.vmm("exit 0"), Arc::new(NoopMeasurer));
    let id = sup.create(fx.spec("")).unwrap();
    assert!(matches!(
        sup.pause(&id),
        Err(ControlError::State(InvalidTransition {
            from: StateKind::Created,
            to: StateKind::Paused
        }))
    ));
    assert!(matches!(sup.resume(&id), Err(ControlError::State(_))));
    assert!(matches!(
        sup.stop(&id, StopMode::Hard),
        Err(StopError::State(_))
    ));
    assert!(matches!(
        sup.vmm_status(&id),
        Err(ControlError::NoProcess(StateKind::Created))
    ));
    let other = VmId::random();
    assert!(matches!(sup.start(&other), Err(StartError::Unknown(_))));
    assert_eq!(sup.show(&id).unwrap().history.len(), 1);
}

/// kernel digest, initrd digest, cmdline, config bytes.
type Seen = (String, Option<String>, String, Vec<u8>);

/// Records what it is asked and refuses or allows.
struct RecordingMeasurer {
    refuse: bool,
    seen: StdMutex<Vec<Seen>>,
}

impl BootMeasurer for RecordingMeasurer {
    fn measure(&self, m: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        lock(&self.seen).push((
            hex::encode(m.kernel_sha256),
            m.initrd_sha256.map(hex::encode),
            m.cmdline.to_owned(),
            m.config_json.to_vec(),
        ));
        if self.refuse {
            Err(MeasureError::Refused {
                reason: "kernel not approved".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[test]
fn refusing_measurer_fails_the_vm_and_spawns_nothing() {
    let fx = Fixture::new();
    let marker = fx.dir.path().join("spawned");
    let vmm = fx.vmm(&format!("touch {}\nexit 0", marker.display()));
    let measurer = Arc::new(RecordingMeasurer {
        refuse: true,
        seen: StdMutex::new(Vec::new()),
    });
    let sup = fx.supervisor(vmm, measurer.clone());
    let rx = sup.subscribe();
    let id = sup.create(fx.spec("exit=halt")).unwrap();
    let err = sup.start(&id).unwrap_err();
    assert!(matches!(
        err,
        StartError::Measure(MeasureError::Refused { .. })
    ));
    let events = drain(&rx);
    let states: Vec<_> = events.iter().map(|e| (e.seq, e.state.kind())).collect();
    assert_eq!(
        states,
        vec![(1, StateKind::Created), (2, StateKind::Failed)]
    );
    assert_eq!(
        events[1].state,
        VmState::Failed(FailReason::MeasurementRefused {
            message: "kernel not approved".into()
        })
    );
    assert_eq!(events[1].vmm_pid, None);
    assert!(!marker.exists());
    assert!(!fx.runtime().join(id.to_string()).join("vm.json").exists());
    assert_eq!(lock(&measurer.seen).len(), 1);
    // A failed VM cannot be started again.
    assert!(matches!(sup.start(&id), Err(StartError::State(_))));
    sup.destroy(&id).unwrap();
    assert_eq!(fx.runtime_entries(), 0);
}

#[test]
fn measurer_sees_the_digests_and_the_exact_config_bytes() {
    let fx = Fixture::new();
    let initrd = fx.dir.path().join("initrd");
    std::fs::write(&initrd, b"abc").unwrap();
    let vmm = fx.vmm("cp \"$CONFIG\" \"$CONFIG.seen\"\nexit 0");
    let measurer = Arc::new(RecordingMeasurer {
        refuse: false,
        seen: StdMutex::new(Vec::new()),
    });
    let sup = fx.supervisor(vmm, measurer.clone());
    let mut spec = fx.spec("exit=reboot");
    spec.initrd = Some(initrd);
    spec.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap());
    let id = sup.create(spec).unwrap();
    sup.start(&id).unwrap();
    sup.wait_for(&id, WAIT, VmState::is_final).unwrap();
    let seen = lock(&measurer.seen).clone();
    assert_eq!(seen.len(), 1);
    let (kernel, initrd, cmdline, config) = &seen[0];
    let expected_kernel = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"not really a kernel"))
    };
    assert_eq!(kernel, &expected_kernel);
    assert_eq!(
        initrd.as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(
        cmdline,
        "exit=reboot trace=4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let dir = fx.runtime().join(id.to_string());
    assert_eq!(&std::fs::read(dir.join("vm.json.seen")).unwrap(), config);
    let json: serde_json::Value = serde_json::from_slice(config).unwrap();
    assert_eq!(json["kernel_sha256"], expected_kernel.as_str());
    assert_eq!(json["cmdline"], cmdline.as_str());
    let details = sup.show(&id).unwrap();
    assert_eq!(
        details.kernel_sha256.as_deref(),
        Some(expected_kernel.as_str())
    );
    assert_eq!(
        details.summary.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[test]
fn fake_vmm_boot_and_reboot_goes_through_every_state_in_order() {
    let fx = Fixture::new();
    let vmm = fx.vmm(
        "echo '{\"event\":\"ready\",\"t_us\":1,\"vcpus\":1,\"memory_mib\":128,\"entry\":\"pvh\",\"pvm_workarounds\":true,\"hidden_cpu_features\":[]}' > $EV\n\
         printf 'SAKSHI-TEST-GUEST v1 entry=linux64\\nboot-complete\\n'\n\
         echo '{\"event\":\"boot_complete\",\"t_us\":2}' > $EV\n\
         sleep 0.2\n\
         printf 'exit: reboot\\n'\n\
         echo '{\"event\":\"exited\",\"reason\":\"reboot\",\"exit_code\":0,\"t_us\":3}' > $EV\n\
         exit 0",
    );
    let sup = fx.supervisor(vmm, Arc::new(NoopMeasurer));
    let rx = sup.subscribe();
    let id = sup.create(fx.spec("exit=reboot")).unwrap();
    sup.start(&id).unwrap();
    let state = sup.wait_for(&id, WAIT, VmState::is_final).unwrap();
    assert_eq!(state, VmState::Stopped);
    let events = drain(&rx);
    let got: Vec<_> = events.iter().map(|e| (e.seq, e.state.kind())).collect();
    assert_eq!(
        got,
        vec![
            (1, StateKind::Created),
            (2, StateKind::Booting),
            (3, StateKind::Running),
            (4, StateKind::Stopped)
        ]
    );
    assert!(events[2].boot_latency_ns.is_some_and(|n| n > 0));
    let pid = events[1].vmm_pid.unwrap();
    assert_eq!(events[3].vmm_pid, Some(pid));
    let exit = events[3].exit.clone().unwrap();
    assert_eq!(exit.code, Some(0));
    assert_eq!(exit.reason, Some(ExitReason::Reboot));
    assert!(exit.peak_rss_kib.is_some_and(|k| k > 0));
    assert!(events.iter().all(|e| e.trace_id == events[0].trace_id));
    let tail = sup.console_tail(&id, 4096).unwrap();
    let text = String::from_utf8(tail).unwrap();
    assert!(text.starts_with("SAKSHI-TEST-GUEST v1"), "{text}");
    assert!(text.ends_with("exit: reboot\n"), "{text}");
    assert_eq!(sup.console_tail(&id, 13).unwrap(), b"exit: reboot\n");
    let details = sup.show(&id).unwrap();
    assert_eq!(details.history, events);
    assert_eq!(details.summary.vmm_pid, None);
    assert!(details.summary.first_output_ns.is_some());
    // The process is reaped: no zombie left behind.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    sup.destroy(&id).unwrap();
    assert_eq!(fx.runtime_entries(), 0);
}

#[test]
fn exit_statuses_map_to_typed_final_states() {
    let fx = Fixture::new();
    let cases: Vec<(&str, VmState)> = vec![
        (
            "echo '{\"event\":\"boot_complete\",\"t_us\":1}' > $EV\n\
             echo '{\"event\":\"exited\",\"reason\":\"triple_fault\",\"exit_code\":2,\"detail\":\"rip=0\",\"t_us\":2}' > $EV\nexit 2",
            VmState::Failed(FailReason::GuestFailed {
                reason: Some(ExitReason::TripleFault),
                detail: Some("rip=0".into()),
            }),
        ),
        (
            "echo 'error: kernel_sha256 mismatch' >&2\nexit 1",
            VmState::Failed(FailReason::VmmRejected {
                detail: Some("error: kernel_sha256 mismatch".into()),
            }),
        ),
        (
            "kill -9 $$",
            VmState::Failed(FailReason::KilledBySignal { signal: 9 }),
        ),
        (
            "exit 7",
            VmState::Failed(FailReason::UnexpectedExit { code: 7 }),
        ),
        ("exit 0", VmState::Stopped),
    ];
    for (body, expected) in cases {
        let sup = fx.supervisor(fx.vmm(body), Arc::new(NoopMeasurer));
        let id = sup.create(fx.spec("")).unwrap();
        sup.start(&id).unwrap();
        let state = sup.wait_for(&id, WAIT, VmState::is_final).unwrap();
        assert_eq!(state, expected, "{body}");
        sup.destroy(&id).unwrap();
    }
    assert_eq!(fx.runtime_entries(), 0);
    assert_eq!(
        VmState::Failed(FailReason::KilledBySignal { signal: 9 }).to_string(),
        "failed (killed by signal 9)"
    );
}

#[test]
fn missing_vmm_binary_fails_the_vm_with_a_typed_error() {
    let fx = Fixture::new();
    let sup = fx.supervisor(fx.dir.path().join("no-such-vmm"), Arc::new(NoopMeasurer));
    let id = sup.create(fx.spec("")).unwrap();
    assert!(matches!(sup.start(&id), Err(StartError::Spawn(..))));
    match sup.show(&id).unwrap().summary.state {
        VmState::Failed(FailReason::Setup { message }) => {
            assert!(message.contains("no-such-vmm"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    sup.destroy(&id).unwrap();
    assert_eq!(fx.runtime_entries(), 0);
}

#[test]
fn hard_stop_without_control_socket_kills_and_counts_as_stopped() {
    let fx = Fixture::new();
    let vmm = fx.vmm("echo '{\"event\":\"boot_complete\",\"t_us\":1}' > $EV\nexec sleep 600");
    let sup = fx.supervisor(vmm, Arc::new(NoopMeasurer));
    let id = sup.create(fx.spec("")).unwrap();
    sup.start(&id).unwrap();
    sup.wait_for(&id, WAIT, |s| *s == VmState::Running).unwrap();
    let listed = sup.list();
    let pid = listed[0].vmm_pid.unwrap();
    assert!(listed[0].vmm_memory.is_some_and(|m| m.rss_kib > 0));
    assert_eq!(sup.stop(&id, StopMode::Hard).unwrap(), VmState::Stopped);
    let exit = sup.show(&id).unwrap().exit.unwrap();
    assert_eq!(exit.signal, Some(9));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(matches!(
        sup.stop(&id, StopMode::Hard),
        Err(StopError::State(_))
    ));
    sup.destroy(&id).unwrap();
}

#[test]
fn dropping_the_supervisor_kills_vmms_and_removes_runtime_dirs() {
    let fx = Fixture::new();
    let vmm = fx.vmm("exec sleep 600");
    let sup = fx.supervisor(vmm, Arc::new(NoopMeasurer));
    let mut pids = Vec::new();
    for _ in 0..3 {
        let id = sup.create(fx.spec("")).unwrap();
        sup.start(&id).unwrap();
        pids.push(sup.show(&id).unwrap().summary.vmm_pid.unwrap());
    }
    assert_eq!(fx.runtime_entries(), 3);
    let clone = sup.clone();
    drop(sup);
    assert_eq!(fx.runtime_entries(), 3, "a live handle keeps everything");
    drop(clone);
    assert_eq!(fx.runtime_entries(), 0);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

#[test]
fn destroy_kills_a_live_vmm_even_in_booting() {
    let fx = Fixture::new();
    let sup = fx.supervisor(fx.vmm("exec sleep 600"), Arc::new(NoopMeasurer));
    let rx = sup.subscribe();
    let id = sup.create(fx.spec("")).unwrap();
    sup.start(&id).unwrap();
    let pid = sup.show(&id).unwrap().summary.vmm_pid.unwrap();
    sup.destroy(&id).unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(fx.runtime_entries(), 0);
    let kinds: Vec<_> = drain(&rx).iter().map(|e| e.state.kind()).collect();
    assert_eq!(
        kinds,
        vec![StateKind::Created, StateKind::Booting, StateKind::Stopped]
    );
}

#[test]
fn events_of_many_vms_keep_per_vm_order() {
    let fx = Fixture::new();
    let vmm = fx.vmm(
        "echo '{\"event\":\"boot_complete\",\"t_us\":1}' > $EV\n\
         echo '{\"event\":\"exited\",\"reason\":\"poweroff\",\"exit_code\":0,\"t_us\":2}' > $EV\nexit 0",
    );
    let sup = fx.supervisor(vmm, Arc::new(NoopMeasurer));
    let rx = sup.subscribe();
    let ids: Vec<VmId> = (0..6).map(|_| sup.create(fx.spec("")).unwrap()).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let sup = &sup;
            s.spawn(move || {
                sup.start(id).unwrap();
                sup.wait_for(id, WAIT, VmState::is_final).unwrap();
            });
        }
    });
    let events = drain(&rx);
    for id in &ids {
        let mine: Vec<_> = events
            .iter()
            .filter(|e| &e.vm_id == id)
            .map(|e| (e.seq, e.state.kind()))
            .collect();
        assert_eq!(
            mine,
            vec![
                (1, StateKind::Created),
                (2, StateKind::Booting),
                (3, StateKind::Running),
                (4, StateKind::Stopped)
            ]
        );
    }
}
