import XCTest
@testable import CloudBackupCore

/// Answers each launch with a scripted result and records what was asked: for the job's decisions,
/// not for process handling (ProcessRunnerTests use real processes).
final class FakeProcessRunner: ProcessRunning, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var specs: [ProcessSpec] = []
    private let answer: @Sendable (ProcessSpec, Int) -> ProcessResult

    init(answer: @escaping @Sendable (ProcessSpec, Int) -> ProcessResult) {
        self.answer = answer
    }

    func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        lock.lock()
        specs.append(spec)
        let index = specs.count - 1
        lock.unlock()
        return FinishedProcess(result: answer(spec, index))
    }

    var commands: [String] {
        lock.lock(); defer { lock.unlock() }
        return specs.map { ([$0.executable] + $0.arguments).joined(separator: " ") }
    }
}

final class FinishedProcess: RunningProcess, @unchecked Sendable {
    let pid: pid_t = 99999
    let result: ProcessResult
    init(result: ProcessResult) { self.result = result }
    func wait() -> ProcessResult { result }
    func send(_ signal: Int32) {}
    var hasExited: Bool { true }
}

final class ResticJobTests: XCTestCase {
    static let missing014 = "Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?\nrclone:r:b\n"
    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "restic-job-tests-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // A PATH where `restic` exists, so the job gets past its preflight.
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func configuration(_ extra: [String: String]) throws -> Configuration {
        // Port 1 on loopback: nothing answers there, so jobs go to the destination directly.
        // The remote `r` is defined through rclone's environment, as rclone allows.
        try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RCLONE_CONFIG_R_TYPE": "local",
                                                   "RESTIC_REST_PORT": "1", "LOCK_WAIT_SECONDS": "1"].merging(extra) { $1 },
                                     needs: [.repositoryPassword])
    }

    func runJob(_ kind: ResticJob.Kind, _ extra: [String: String], runner: FakeProcessRunner) throws -> (Int32, String) {
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) },
                                 hostName: "vm", sleep: { _ in }, backoffScale: 0.001, stdoutIsTerminal: true)
        let code = ResticJob(kind: kind, userArguments: ["/data"], configuration: try configuration(extra), context: context).run()
        return (code, lines.text)
    }

    func testMissingRepositoryOnAnEmptyRemoteIsInitialisedVerifiedThenTheBackupRetried() throws {
        let repository = FakeRepository()
        let runner = FakeProcessRunner { spec, _ in
            if spec.arguments.first == "backup" {
                return repository.exists ? ProcessResult(status: .exited(0), standardOutput: "snapshot abcd1234 saved\n")
                    : ProcessResult(status: .exited(1), standardError: Self.missing014)
            }
            return repository.answer(spec) ?? ProcessResult(status: .exited(99))
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(runner.commands, ["restic backup /data",
                                         "restic cat config --no-lock",  // under the init lock: did another job create it meanwhile?
                                         "rclone lsjson --max-depth 1 r:b", "restic init",
                                         "restic cat config --no-lock", "restic list keys --no-lock",  // the one init made, alone
                                         "restic backup /data",
                                         "restic cat snapshot abcd1234 --no-lock"])  // the snapshot is really there
        XCTAssertEqual(runner.specs[3].environment["RESTIC_REPOSITORY"], "rclone:r:b")
        XCTAssertTrue(log.contains("repository 0123456789 created at r:b"), log)
    }

    func testAnInitThatFindsASecondKeyStopsBeforeBackingUp() throws {
        let repository = FakeRepository()
        repository.keys = 2
        let runner = FakeProcessRunner { spec, _ in
            spec.arguments.first == "backup" ? ProcessResult(status: .exited(1), standardError: Self.missing014)
                : repository.answer(spec) ?? ProcessResult(status: .exited(99))
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable, log)
        XCTAssertEqual(runner.commands.filter { $0 == "restic backup /data" }.count, 1, "no backup into a repository that is not the one created")
        XCTAssertTrue(log.contains("it holds 2 keys instead of the 1 just created: another process created one there at the same moment"), log)
    }

    func testAnInitWhoseConfigWasOverwrittenStopsBeforeBackingUp() throws {
        let repository = FakeRepository()
        repository.idAfterInit = "fedcba9876" + String(repeating: "0", count: 54)
        let runner = FakeProcessRunner { spec, _ in
            spec.arguments.first == "backup" ? ProcessResult(status: .exited(1), standardError: Self.missing014)
                : repository.answer(spec) ?? ProcessResult(status: .exited(99))
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable, log)
        XCTAssertTrue(log.contains("its config now belongs to repository fedcba9876, not to 0123456789"), log)
    }

    func testARepositoryCreatedMeanwhileByAnotherJobIsUsedNotInitialised() throws {
        let repository = FakeRepository()
        repository.exists = true  // restic's first answer was "missing"; by the time we hold the init lock it is there
        let runner = FakeProcessRunner { spec, index in
            if spec.arguments.first == "backup" {
                return index == 0 ? ProcessResult(status: .exited(1), standardError: Self.missing014)
                    : ProcessResult(status: .exited(0), standardOutput: "snapshot abcd1234 saved\n")
            }
            return repository.answer(spec) ?? ProcessResult(status: .exited(99))
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 0, log)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("was created by another job meanwhile"), log)
    }

    func testAFailedListingNeverInitialises() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(1), standardError: Self.missing014)
            case "cat": return ProcessResult(status: .exited(1), standardError: Self.missing014)
            case "lsjson": return ProcessResult(status: .exited(1), standardError: "2026/11/22 02:00:00 ERROR : : error listing: AccessDenied: Access Denied\n")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("cannot reach the backup destination r:b: ERROR : : error listing: AccessDenied: Access Denied"), log)
    }

    func testAListingThatShowsARepositoryNeverInitialises() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup", "cat": return ProcessResult(status: .exited(10), standardError: "Fatal: repository does not exist")
            case "lsjson": return ProcessResult(status: .exited(0), standardOutput: #"[{"Path":"config","Name":"config","IsDir":false},{"Path":"keys","Name":"keys","IsDir":true}]"#)
            case "lsf": return ProcessResult(status: .exited(0), standardOutput: "0123abcd\n")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("restic finds no repository at r:b, but restic files are there (config, keys/ (1 file)), so no repository was created"), log)
    }

    func testTheRemainsOfARepositoryAreNeverInitialisedOver() throws {
        // config and keys/ gone (a lifecycle rule, a hand deletion), data/ and snapshots/ still there.
        let runner = FakeProcessRunner { spec, _ in
            switch (spec.arguments.first, spec.arguments.last) {
            case ("backup", _), ("cat", _): return ProcessResult(status: .exited(1), standardError: Self.missing014)
            case ("lsjson", _): return ProcessResult(status: .exited(0), standardOutput: #"[{"Name":"data"},{"Name":"snapshots"},{"Name":"index"}]"#)
            case ("lsf", "r:b/data"): return ProcessResult(status: .exited(0), standardOutput: "00/00aa\n01/01bb\n")
            case ("lsf", "r:b/snapshots"): return ProcessResult(status: .exited(0), standardOutput: "77aa\n")
            case ("lsf", _): return ProcessResult(status: .exited(0), standardOutput: "")
            default: return ProcessResult(status: .exited(0))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable, log)
        XCTAssertFalse(runner.commands.contains("restic init"))
        XCTAssertTrue(log.contains("restic files are there (data/ (2 files), snapshots/ (1 file))"), log)
        XCTAssertTrue(log.contains("a repository is or was here, and its config or keys are missing"), log)
    }

    func testADirectoryNotFoundIsAnEmptyDestination() throws {
        let repository = FakeRepository()
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(repository.exists ? 0 : 10), standardOutput: repository.exists ? "snapshot abcd1234 saved\n" : "")
            case "lsjson": return ProcessResult(status: .exited(3), standardError: "ERROR : : error listing: directory not found")
            default: return repository.answer(spec) ?? ProcessResult(status: .exited(99))
            }
        }
        XCTAssertEqual(try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner).0, 0)
        XCTAssertTrue(runner.commands.contains("restic init"))
    }

    func testASnapshotThatCannotBeReadBackIsAFailure() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "backup": return ProcessResult(status: .exited(0), standardOutput: "snapshot abcd1234 saved\n")
            case "cat": return ProcessResult(status: .exited(1), standardError: Self.missing014)
            default: return ProcessResult(status: .exited(99))
            }
        }
        let (code, log) = try runJob(.backup, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, ExitCode.failure, log)
        XCTAssertTrue(log.contains("restic reported snapshot abcd1234 saved, but it cannot be read back from the repository (there is no repository): the backup is not safe"), log)
    }

    func testADryRunIsNotReadBack() throws {
        let runner = FakeProcessRunner { spec, _ in ProcessResult(status: .exited(spec.arguments.first == "backup" ? 0 : 99)) }
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in }, stdoutIsTerminal: true)
        let code = ResticJob(kind: .backup, userArguments: ["--dry-run", "/d"], configuration: try configuration([:]), context: context).run()
        XCTAssertEqual(code, 0, lines.text)
        XCTAssertEqual(runner.commands, ["restic backup --dry-run /d"])
    }

    func testForgetOnAnUnlistableDestinationSaysSoNotRunABackup() throws {
        let runner = FakeProcessRunner { spec, _ in
            switch spec.arguments.first {
            case "lsjson": return ProcessResult(status: .exited(1), standardError: "2026/11/22 02:00:00 ERROR : : error listing: AccessDenied: Access Denied\n")
            default: return ProcessResult(status: .exited(1), standardError: Self.missing014)
            }
        }
        let (code, log) = try runJob(.forget, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 1)
        XCTAssertTrue(log.contains("restic found no repository, and the destination cannot be listed either: ERROR : : error listing: AccessDenied"), log)
        XCTAssertFalse(log.contains("run a backup first"), log)
    }

    func testAnUnreachableRepositoryDoesNotClaimNothingChanged() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(1), standardError: "Fatal: unable to save snapshot: Post \"http://127.0.0.1:8080/data/ab\": dial tcp 127.0.0.1:8080: connect: connection refused\n") }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 1)
        XCTAssertFalse(log.contains("nothing was changed"), log)
        XCTAssertTrue(log.contains("its lock may remain"), log)
        XCTAssertTrue(log.contains("backup failed: the repository could not be reached"), log)
        XCTAssertFalse(log.contains("backup failed: backup failed"), log)
    }

    func testForgetNeverInitialises() throws {
        let runner = FakeProcessRunner { spec, _ in
            spec.arguments.first == "lsjson" ? ProcessResult(status: .exited(0), standardOutput: "[]") : ProcessResult(status: .exited(1), standardError: Self.missing014)
        }
        let (code, log) = try runJob(.forget, ["BACKUP_REMOTE": "r:b"], runner: runner)
        XCTAssertEqual(code, 1)
        XCTAssertEqual(runner.commands, ["restic forget /data", "rclone lsjson --max-depth 1 r:b"], "listed, never initialised")
        XCTAssertTrue(log.contains("there is no restic repository at r:b (run a backup first"), log)
    }

    static let lockJSON = #"{"time":"%@","exclusive":true,"hostname":"%@","username":"root","pid":7,"uid":0,"gid":0}"#
    static let lockID = String(repeating: "ab", count: 32)

    /// A job whose first run meets one lock (of `host`, made `age` seconds ago).
    func runLockedJob(_ kind: ResticJob.Kind, host: String, age: Double, wait: String = "1") throws -> (Int32, [String], String) {
        let time = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-age))
        let removed = FakeRepository()
        let runner = FakeProcessRunner { spec, index in
            switch spec.arguments.prefix(2).joined(separator: " ") {
            case "list locks": return ProcessResult(status: .exited(0), standardOutput: removed.exists ? "" : Self.lockID + "\n")
            case "cat lock": return ProcessResult(status: .exited(0), standardOutput: String(format: Self.lockJSON, time, host))
            default: break
            }
            if spec.executable == "rclone" && spec.arguments.first == "deletefile" {
                removed.exists = true
                return ProcessResult(status: .exited(0))
            }
            if removed.exists { return ProcessResult(status: .exited(0)) }
            return ProcessResult(status: .exited(1), standardError: "unable to create lock in backend: repository is already locked exclusively by PID 7 on \(host) by root (UID 0, GID 0)\n")
        }
        let (code, log) = try runJob(kind, ["BACKUP_REMOTE": "r:b", "LOCK_WAIT_SECONDS": wait], runner: runner)
        return (code, runner.commands, log)
    }

    func testALockOlderThanResticsStaleAgeIsRemovedAndTheJobRetried() throws {
        let (code, commands, log) = try runLockedJob(.forget, host: "elsewhere", age: 31 * 60)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(commands, ["restic forget /data", "restic list locks --no-lock", "restic cat lock \(Self.lockID) --no-lock",
                                  "rclone deletefile r:b/locks/\(Self.lockID)", "restic forget /data"])
        XCTAssertTrue(log.contains("removed the stale lock abababab"), log)
        XCTAssertFalse(commands.contains { $0.contains("unlock") }, "restic unlock is never used")
    }

    func testAFreshLockOfThisHostNameThatNoRegisteredJobMadeIsWaitedForNotRemoved() throws {
        // The case restic's own rule gets wrong: same host name, PID 7 not running *here*, but the
        // lock may belong to a job in another container (another PID namespace).
        let (code, commands, log) = try runLockedJob(.forget, host: "vm", age: 60)
        XCTAssertEqual(code, ExitCode.busy, log)
        XCTAssertFalse(commands.contains { $0.hasPrefix("rclone deletefile") }, log)
        XCTAssertTrue(log.contains("not a restic started by cloud-backup with this state directory"), log)
    }

    func testALockOfAnotherHostIsWaitedFor() throws {
        let (code, commands, log) = try runLockedJob(.backup, host: "other-vm", age: 60)
        XCTAssertEqual(code, ExitCode.busy, log)
        XCTAssertFalse(commands.contains { $0.hasPrefix("rclone deletefile") })
        XCTAssertTrue(log.contains("still locked after waiting 1 s (LOCK_WAIT_SECONDS)"), log)
    }

    func testAReadOnlyDestinationIsNotALock() throws {
        let output = "Save(<lock/fda16ff7da>) returned error, retrying after 552ms: open /r/locks/fda-tmp-1: read-only file system\nopen /r/locks/fda-tmp-2: read-only file system\ngithub.com/restic/restic/internal/backend/local.(*Local).Save\n\tgithub.com/restic/restic/internal/backend/local/local.go:153\nruntime.goexit\n\truntime/asm_amd64.s:1594\nunable to create lock in backend\n"
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(1), standardError: output) }
        let started = Date()
        let (code, log) = try runJob(.backup, ["LOCK_WAIT_SECONDS": "900"], runner: runner)
        XCTAssertEqual(code, 1, log)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "no waiting for a lock that does not exist")
        XCTAssertEqual(runner.commands, ["restic backup /data"])
        XCTAssertTrue(log.contains("the destination is read-only (read-only file system): restic could not write its lock file"), log)
        XCTAssertFalse(log.contains("unlock"), log)
    }

    func testWrongPasswordKeepsResticsExitCodeAndSaysWhatToDo() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(12), standardError: "Fatal: wrong password or no key found") }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 12)
        XCTAssertTrue(log.contains("wrong password — RESTIC_PASSWORD does not open the repository"), log)
        XCTAssertEqual(runner.commands, ["restic backup /data"], "no init, no retry")
    }

    func testHostAndContainerIdWarning() throws {
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "4f9c2a1b3d5e", sleep: { _ in }, stdoutIsTerminal: true)
        _ = ResticJob(kind: .backup, userArguments: ["/d"], configuration: try configuration([:]), context: context).run()
        XCTAssertTrue(lines.text.contains("looks like a container id and RESTIC_HOST is not set"), lines.text)
        let withHost = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        _ = try runJob(.backup, ["RESTIC_HOST": "vm1"], runner: withHost)
        // On a terminal restic's output is not read: this run's snapshot is looked up by host instead.
        XCTAssertEqual(withHost.commands, ["restic backup --host vm1 /data", "restic snapshots --json --no-lock --latest 1 --host vm1"])
    }

    func testMissingResticIsUnavailable() throws {
        try FileManager.default.removeItem(atPath: directory + "/restic")
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertTrue(log.contains("restic was not found on PATH"), log)
        XCTAssertTrue(runner.commands.isEmpty)
    }

    func testIncompleteSnapshotKeepsExitCode3() throws {
        let runner = FakeProcessRunner { spec, _ in
            ProcessResult(status: .exited(spec.arguments.first == "backup" ? 3 : 0), standardOutput: spec.arguments.first == "backup" ? "snapshot 1234abcd saved\n" : "")
        }
        let (code, log) = try runJob(.backup, [:], runner: runner)
        XCTAssertEqual(code, 3)
        XCTAssertTrue(log.contains("snapshot 1234abcd saved; WARNING: some files could not be read"), log)
    }
}

/// The answers of a repository for the fake runner: `cat config`, `init`, `list keys`, `cat snapshot`.
final class FakeRepository: @unchecked Sendable {
    private let lock = NSLock()
    private var _exists = false
    var keys = 1
    var idAfterInit = "0123456789" + String(repeating: "a", count: 54)
    var exists: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _exists }
        set { lock.lock(); _exists = newValue; lock.unlock() }
    }

    func answer(_ spec: ProcessSpec) -> ProcessResult? {
        switch spec.arguments.prefix(2).joined(separator: " ") {
        case "cat config":
            return exists ? ProcessResult(status: .exited(0), standardOutput: "{\"version\":2,\"id\":\"\(idAfterInit)\"}")
                : ProcessResult(status: .exited(1), standardError: ResticJobTests.missing014)
        case "list keys": return ProcessResult(status: .exited(0), standardOutput: (0..<keys).map { "\($0)abc\n" }.joined())
        case "cat snapshot": return ProcessResult(status: .exited(0), standardOutput: "{}")
        default: break
        }
        switch spec.arguments.first {
        case "init":
            exists = true
            return ProcessResult(status: .exited(0), standardOutput: "created restic repository 0123456789 at r:b\n")
        case "lsjson": return ProcessResult(status: .exited(0), standardOutput: "[]")
        case "lsf": return ProcessResult(status: .exited(0))
        default: return nil
        }
    }
}

final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return lines.joined() }
}

final class InterruptedJobTests: XCTestCase {
    func testRestic018ContextCanceledAfterOurStopIsAnInterruption() throws {
        let directory = NSTemporaryDirectory() + "interrupted-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let signals = SignalMonitor()
        let runner = FakeProcessRunner { _, _ in
            // As restic 0.18 does when SIGINT arrives mid-backup.
            ProcessResult(status: .exited(1), standardError: "signal interrupt received, cleaning up\nFatal: unable to save snapshot: context canceled\n")
        }
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RESTIC_REST_PORT": "1"],
                                                         needs: [.repositoryPassword])
        let lines = LineCollector()
        signals.simulateForTests(SIGTERM)
        let context = JobContext(environment: [:], runner: runner, signals: signals, log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in }, stdoutIsTerminal: true)
        let code = ResticJob(kind: .backup, userArguments: ["/d"], configuration: configuration, context: context).run()
        XCTAssertEqual(code, 130)
        XCTAssertTrue(lines.text.contains("backup interrupted: stopped on request"), lines.text)
    }
}

final class InterruptedInitTests: XCTestCase {
    func run(keysListing: String) throws -> (Int32, [String], String) {
        let directory = NSTemporaryDirectory() + "interrupted-init-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let repository = FakeRepository()
        let runner = FakeProcessRunner { spec, _ in
            switch (spec.arguments.first, spec.arguments.last) {
            case ("backup", _): return ProcessResult(status: .exited(repository.exists ? 0 : 10), standardOutput: repository.exists ? "snapshot abcd1234 saved\n" : "")
            case ("lsjson", "r:b"): return ProcessResult(status: .exited(0), standardOutput: #"[{"Name":"data"},{"Name":"keys"},{"Name":"locks"}]"#)
            case ("lsf", "r:b/keys"): return ProcessResult(status: .exited(0), standardOutput: keysListing)
            case ("lsf", _): return ProcessResult(status: .exited(0))
            default: return repository.answer(spec) ?? ProcessResult(status: .exited(99))
            }
        }
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RCLONE_CONFIG_R_TYPE": "local",
                                                                       "RESTIC_REST_PORT": "1", "BACKUP_REMOTE": "r:b"], needs: [.repositoryPassword])
        let lines = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) }, hostName: "vm", sleep: { _ in }, stdoutIsTerminal: true)
        let code = ResticJob(kind: .backup, userArguments: ["/d"], configuration: configuration, context: context).run()
        return (code, runner.commands, lines.text)
    }

    func testEmptyDirectoriesAreAnInitThatNeverSavedAKey() throws {
        let (code, commands, log) = try run(keysListing: "")
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(Array(commands.prefix(6)), ["restic backup /d", "restic cat config --no-lock", "rclone lsjson --max-depth 1 r:b",
                                                   "rclone lsf --recursive --files-only --max-depth 3 r:b/data",
                                                   "rclone lsf --recursive --files-only --max-depth 3 r:b/keys",
                                                   "rclone lsf --recursive --files-only --max-depth 3 r:b/locks"])
        XCTAssertTrue(commands.contains("restic init"))
        XCTAssertTrue(log.contains("holds only empty directories of restic (data, keys, locks)"), log)
    }

    func testKeyFilesWithoutConfigAreNeverOverwritten() throws {
        let (code, commands, log) = try run(keysListing: "0123abcd\n")
        XCTAssertEqual(code, ExitCode.unavailable)
        XCTAssertFalse(commands.contains("restic init"))
        XCTAssertTrue(log.contains("a `restic init` was interrupted after it saved a key and before the config"), log)
    }
}
