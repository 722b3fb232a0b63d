import XCTest
@testable import CloudBackupCore

/// Launches for real, and returns only once the child has created `readyFile` (after setting its
/// traps): a stop request sent right after the launch then meets the child as it will be, not a shell
/// still starting up with SIGINT at its default.
struct ReadyRunner: ProcessRunning {
    let readyFile: String

    func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        let child = try SystemProcessRunner().launch(spec)
        let end = Date().addingTimeInterval(10)
        while access(readyFile, F_OK) != 0 && !child.hasExited && Date() < end {
            Thread.sleep(forTimeInterval: 0.01)
        }
        return child
    }
}

/// A stop request reaches a child the same way whenever it comes: SIGINT, the grace period, SIGKILL.
final class RunInterruptiblyTests: XCTestCase {
    var readyFile: String!

    override func setUp() {
        readyFile = NSTemporaryDirectory() + "ready-\(UUID().uuidString)"
    }

    override func tearDown() {
        unlink(readyFile)
    }

    /// A child deaf to SIGINT (restic stuck in a system call looks the same from here).
    var deafChild: ProcessSpec {
        ProcessSpec(executable: "sh", arguments: ["-c", "trap '' INT; touch \"$0\"; sleep 30", readyFile],
                    environment: ["PATH": "/usr/bin:/bin"], standardOutput: .discard, standardError: .discard)
    }

    func testAStopRequestedBeforeTheLaunchEndsInSIGKILLAfterTheGrace() throws {
        let signals = SignalMonitor()
        signals.simulateForTests(SIGTERM)
        let lines = LineCollector()
        let started = Date()
        let result = try runInterruptibly(deafChild, runner: ReadyRunner(readyFile: readyFile), signals: signals,
                                          graceSeconds: 1, log: Logger(sink: { lines.add($0) }))
        XCTAssertEqual(result.status, .signaled(SIGKILL))
        XCTAssertLessThan(Date().timeIntervalSince(started), 8)
        XCTAssertTrue(lines.text.contains("received SIGTERM: asking sh (PID "), lines.text)
        XCTAssertTrue(lines.text.contains("sh did not stop within 1 s: sending SIGKILL"), lines.text)
        XCTAssertFalse(lines.text.contains("again"), "one request, one announcement: \(lines.text)")
    }

    func testAStopRequestedWhileItRunsTakesTheSamePath() throws {
        let signals = SignalMonitor()
        let lines = LineCollector()
        let readyFile = self.readyFile!
        DispatchQueue.global().async {
            while access(readyFile, F_OK) != 0 { Thread.sleep(forTimeInterval: 0.01) }
            signals.simulateForTests(SIGTERM)
            signals.simulateForTests(SIGTERM)
        }
        let started = Date()
        let result = try runInterruptibly(deafChild, runner: SystemProcessRunner(), signals: signals,
                                          graceSeconds: 1, log: Logger(sink: { lines.add($0) }))
        XCTAssertEqual(result.status, .signaled(SIGKILL))
        XCTAssertLessThan(Date().timeIntervalSince(started), 8)
        XCTAssertTrue(lines.text.contains("sh did not stop within 1 s: sending SIGKILL"), lines.text)
        XCTAssertTrue(lines.text.contains("received SIGTERM again: already stopping"), lines.text)
    }
}

/// State shared between threads. Without the thread sanitizer these check the values; with it
/// (`swift test --sanitize=thread`, `TSAN_OPTIONS=halt_on_error=1`) an unsynchronised access fails them.
final class SharedStateTests: XCTestCase {
    func testAnObserverThatOutlivesItsReporterDropsTheLine() {
        // A grandchild holding restic's pipe can write after the job let go of the reporter.
        let written = LineCollector()
        var reporter: BackupProgressReporter? = BackupProgressReporter(interval: 60, writeOut: { written.add($0) }, writeError: { written.add($0) })
        let output = reporter!.standardOutput
        let errors = reporter!.standardError
        weak let gone = reporter
        reporter = nil
        XCTAssertNil(gone, "the observers do not keep the reporter alive")
        output.handle("late line")
        errors.handle("late error")
        XCTAssertEqual(written.text, "")
    }

    func testTheReporterTakesBothStreamsAtOnce() {
        let reporter = BackupProgressReporter(interval: 60, writeOut: { _ in }, writeError: { _ in })
        concurrently(8) { worker in
            for line in 0..<25 {
                if worker % 2 == 0 {
                    reporter.standardOutput.handle("line \(worker)-\(line)")
                } else {
                    reporter.standardError.handle("error \(worker)-\(line)")
                }
                _ = reporter.shownOutput
            }
        }
        XCTAssertEqual(reporter.shownOutput.split(separator: "\n").count, 100)
        XCTAssertEqual(reporter.errorOutput.split(separator: "\n").count, 100)
    }

    func testTheFirstStopSignalIsKeptWhileOthersReadIt() {
        let signals = SignalMonitor()
        let token = signals.add { _ in }
        defer { signals.remove(token) }
        concurrently(8) { worker in
            if worker == 0 {
                signals.simulateForTests(SIGTERM)
                signals.simulateForTests(SIGINT)
            } else {
                for _ in 0..<2000 {
                    if let received = signals.received { XCTAssertEqual(received, SIGTERM) }
                }
            }
        }
        XCTAssertEqual(signals.received, SIGTERM)
        XCTAssertTrue(signals.stopRequested)
    }

    func testThePingBodyLimitIsReadWhileStartSetsIt() {
        let transport = HTTPTransport { _, _, _ in .init(status: 200, headers: ["ping-body-limit": "50"]) }
        let monitor = HealthchecksMonitor(check: URL(string: "https://hc.example/abc")!, transport: transport, secrets: [], log: Logger(sink: { _ in }))
        concurrently(8) { worker in
            if worker == 0 {
                monitor.start()
            } else {
                for _ in 0..<2000 { XCTAssertTrue([PingBody.defaultLimit, 50].contains(monitor.bodyLimit)) }
            }
        }
        XCTAssertEqual(monitor.bodyLimit, 50)
    }
}

/// Runs `body` on `count` threads released together (a semaphore orders each only against the
/// releasing thread, not against the others, so the thread sanitizer sees their accesses as racing
/// unless the code under test synchronises them), and waits for all.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let go = DispatchSemaphore(value: 0)
    let done = DispatchGroup()
    for worker in 0..<count {
        done.enter()
        Thread {
            go.wait()
            body(worker)
            done.leave()
        }.start()
    }
    for _ in 0..<count { go.signal() }
    done.wait()
}

/// `status`'s network and restic probes, as far as they can run without the outside world.
final class StatusProbeTests: XCTestCase {
    func testAnUnresolvableNameFailsAtTheDNSStep() {
        let started = Date()
        guard case .failure(let reason) = connectTCP(host: "no-such-host.cloud-backup.invalid", port: 443, timeout: 5) else {
            return XCTFail("a name under .invalid never resolves")
        }
        XCTAssertTrue(reason.hasPrefix("DNS: "), reason)
        XCTAssertLessThan(Date().timeIntervalSince(started), 6, "bounded by the timeout")
    }

    func testALocalListenerIsReachedAndAClosedPortRefused() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && listen(listener, 4) == 0 && getsockname(listener, pointer, &length) == 0
            }
        }
        XCTAssertTrue(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        guard case .success = connectTCP(host: "127.0.0.1", port: port, timeout: 5) else { return XCTFail("listener not reached") }
        close(listener)
        guard case .failure(let reason) = connectTCP(host: "127.0.0.1", port: port, timeout: 5) else { return XCTFail("closed port reached") }
        XCTAssertEqual(reason, "Connection refused")
    }

    func testTheProbeSocketIsCloseOnExecAndNonBlocking() {
        let fd = streamSocket(family: AF_INET, type: Int32(SOCK_STREAM.rawValue), protocolNumber: 0)
        defer { close(fd) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC)
        XCTAssertEqual(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK)
    }

    func testWorkThatOverrunsItsDeadlineIsAbandoned() {
        // The bound the DNS lookup runs under (a resolver that never answers cannot be made here).
        let started = Date()
        let abandoned: Int? = waitAtMost(seconds: 0.3, threadName: "slow") {
            Thread.sleep(forTimeInterval: 2)
            return 1
        }
        XCTAssertNil(abandoned)
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.5)
        XCTAssertEqual(waitAtMost(seconds: 5, threadName: "quick") { 42 }, 42)
    }

    // MARK: snapshots

    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "status-probe-tests-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func snapshotChecks(_ snapshots: [(host: String, id: String, hoursAgo: Double)], extra: [String: String] = [:]) throws -> ([StatusCheck], [ProcessSpec]) {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let list = snapshots.map { snapshot -> [String: Any] in
            ["hostname": snapshot.host, "short_id": snapshot.id, "paths": ["/data"],
             "time": formatter.string(from: Date().addingTimeInterval(-snapshot.hoursAgo * 3600))]
        }
        let json = String(decoding: try JSONSerialization.data(withJSONObject: list), as: UTF8.self)
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0), standardOutput: json) }
        let configuration = try ConfigurationLoader.load(
            environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RESTIC_REST_PORT": "1"].merging(extra) { $1 },
            needs: [.repositoryPassword])
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { _ in }),
                                 hostName: "vm", sleep: { _ in }, stdoutIsTerminal: false)
        let checks = StatusReport(environment: [:], context: context).snapshotChecks(configuration, route: .direct(configuration.destination))
        return (checks, runner.specs)
    }

    func testSnapshotsAsksResticForThisHostsLatestOnly() throws {
        // `--latest 1` gives one per set of paths: the newest of those is this host's latest.
        let (checks, specs) = try snapshotChecks([("vm", "aaaa1111", 30), ("vm", "bbbb2222", 2)])
        XCTAssertEqual(specs.map(\.arguments), [["snapshots", "--json", "--no-lock", "--latest", "1", "--host", "vm"]])
        XCTAssertEqual(specs.first?.standardOutput, .collect(limit: 1 << 20))
        XCTAssertEqual(checks.count, 1)
        XCTAssertEqual(checks.first?.ok, true)
        XCTAssertTrue(checks.first?.detail.hasPrefix("latest snapshot of vm: bbbb2222, 2.0 h ago") == true, "\(checks)")
    }

    func testSnapshotsUseResticHostWhenSet() throws {
        let (checks, specs) = try snapshotChecks([], extra: ["RESTIC_HOST": "backup-host"])
        XCTAssertEqual(specs.first?.arguments.suffix(2), ["--host", "backup-host"])
        XCTAssertEqual(checks, [.fail("snapshots", "no snapshot of this host (backup-host) yet",
                                      fix: "run `cloud-backup backup <dirs>` (and check the backup job's schedule and log)")])
    }

    func testAnOldSnapshotFailsTheMaximumAge() throws {
        let (checks, _) = try snapshotChecks([("vm", "cccc3333", 24 * 5)])
        XCTAssertEqual(checks.count, 1)
        XCTAssertEqual(checks.first?.ok, false)
        XCTAssertTrue(checks.first?.detail.hasSuffix("5 days ago (older than SNAPSHOT_MAX_AGE_HOURS=48)") == true, "\(checks)")
    }
}
