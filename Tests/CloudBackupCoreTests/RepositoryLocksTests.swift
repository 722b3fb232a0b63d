import XCTest
@testable import CloudBackupCore

/// The lock rule (which locks may be removed) and the registry that proves a restic has ended.
final class RepositoryLocksTests: XCTestCase {
    let now = Date(timeIntervalSince1970: 2_000_000_000)

    func lock(host: String = "vm", pid: Int32 = 42, age: Double) -> RepositoryLock {
        RepositoryLock(id: String(repeating: "c", count: 64), time: now.addingTimeInterval(-age), exclusive: false, hostname: host, pid: pid, username: "user")
    }

    func entry(host: String = "vm", pid: Int32 = 42, startedAgo: Double, alive: Bool, ended: Bool = true) -> ResticRunRegistry.Observed {
        let started = now.timeIntervalSince1970 - startedAgo
        return ResticRunRegistry.Observed(path: "/x/\(pid).json",
                                          entry: .init(hostname: host, pid: pid, pidNamespace: "pid:[1]", jobPID: 7, started: started, command: "backup",
                                                       ended: ended ? started + 10 : nil),
                                          alive: alive)
    }

    func testAgeBeyondResticsStaleTimeIsStaleWhoeverHoldsIt() {
        let verdict = RepositoryLocks.judge(lock(host: "elsewhere", age: 31 * 60), now: now, hostName: "vm", registered: [])
        guard case .stale(let reason) = verdict else { return XCTFail("\(verdict)") }
        XCTAssertTrue(reason.contains("not refreshed for 31 min"), reason)
    }

    func testAFreshLockOfAnotherHostIsLive() {
        guard case .live(let reason) = RepositoryLocks.judge(lock(host: "other", age: 60), now: now, hostName: "vm", registered: []) else { return XCTFail() }
        XCTAssertTrue(reason.contains("another host"), reason)
    }

    func testSameHostNameWithoutRegistrationIsNotProvablyDead() {
        // restic's own rule would call this stale when PID 42 is not running here; from another
        // container it may well be running.
        guard case .live(let reason) = RepositoryLocks.judge(lock(age: 60), now: now, hostName: "vm", registered: []) else { return XCTFail() }
        XCTAssertTrue(reason.contains("not a restic started by cloud-backup"), reason)
    }

    func testARegisteredResticThatEndedLeavesAStaleLock() {
        let verdict = RepositoryLocks.judge(lock(age: 60), now: now, hostName: "vm", registered: [entry(startedAgo: 120, alive: false)])
        guard case .stale(let reason) = verdict else { return XCTFail("\(verdict)") }
        XCTAssertTrue(reason.contains("of a cloud-backup job that has ended"), reason)
    }

    func testARunningRegisteredResticKeepsItsLockEvenBesideAnEndedOneWithTheSamePID() {
        // Two containers, restic at PID 42 in both: one ended, one runs. Which lock is whose cannot
        // be told, so both are respected.
        let registered = [entry(startedAgo: 3600, alive: false), entry(startedAgo: 100, alive: true, ended: false)]
        guard case .live(let reason) = RepositoryLocks.judge(lock(age: 60), now: now, hostName: "vm", registered: registered) else { return XCTFail() }
        XCTAssertTrue(reason.contains("a running cloud-backup job"), reason)
    }

    func testAnEndedRegistrationYoungerThanTheLockIsNotItsMaker() {
        // The registered restic started after the lock was written: the lock is someone else's.
        let verdict = RepositoryLocks.judge(lock(age: 600), now: now, hostName: "vm", registered: [entry(startedAgo: 60, alive: false)])
        guard case .live = verdict else { return XCTFail("\(verdict)") }
    }

    func testOnlyCommandsThatMayLockAreRegistered() {
        XCTAssertTrue(RegisteringRunner.makesLocks(["backup", "/data"]))
        XCTAssertTrue(RegisteringRunner.makesLocks(["forget", "--prune"]))
        XCTAssertFalse(RegisteringRunner.makesLocks(["cat", "config", "--no-lock"]))
        XCTAssertFalse(RegisteringRunner.makesLocks(["init"]))
        XCTAssertFalse(RegisteringRunner.makesLocks(["--json", "version"]))
    }

    func testLockJSONFromRestic() {
        let json = #"{"time":"2026-12-03T14:20:01.123456789+01:00","exclusive":true,"hostname":"vm1","username":"user","pid":77,"uid":1000,"gid":1000}"#
        let parsed = RepositoryLock.parse(id: "ab", json: json)
        XCTAssertEqual(parsed?.pid, 77)
        XCTAssertEqual(parsed?.hostname, "vm1")
        XCTAssertEqual(parsed?.exclusive, true)
        XCTAssertEqual(parsed?.time.timeIntervalSince1970 ?? 0, 1_796_304_001.123, accuracy: 0.01)
    }

    func testTheRegistryKnowsARunningResticFromAnEndedOneWhateverKilledIt() throws {
        let state = NSTemporaryDirectory() + "registry-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let bin = state + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        // A stand-in named restic (the registry registers programs of that name only).
        _ = FileManager.default.createFile(atPath: bin + "/restic", contents: Data("#!/bin/sh\nexec sleep 30\n".utf8), attributes: [.posixPermissions: 0o755])
        let registry = ResticRunRegistry(stateDirectory: state)
        let runner = RegisteringRunner(base: SystemProcessRunner(), registry: registry, hostName: "vm", log: Logger(sink: { _ in }))
        let child = try runner.launch(ProcessSpec(executable: "restic", arguments: ["backup"], environment: ["PATH": bin + ":/usr/bin:/bin"]))
        let running = registry.observe()
        XCTAssertEqual(running.count, 1)
        XCTAssertEqual(running.first?.alive, true)
        XCTAssertEqual(running.first?.entry?.pid, child.pid)
        XCTAssertEqual(running.first?.entry?.command, "backup")

        child.send(SIGKILL)
        _ = child.wait()
        let ended = registry.observe()
        XCTAssertEqual(ended.first?.alive, false, "the kernel released the registry lock with the process")
        XCTAssertEqual(ended.first?.entry?.killed, true)
        XCTAssertNotNil(ended.first?.entry?.ended)
        registry.removeLongEnded(now: Date().addingTimeInterval(3600))
        XCTAssertEqual(registry.observe().count, 0, "an hour after its end no lock of it can be fresh: housekept")
    }

    func testTheRegistryLockOutlivesAKilledJobWhileItsResticRuns() throws {
        // The job (here: a shell that registered nothing itself) is modelled by holding the lock in
        // this process and handing it to the child; dropping ours must leave it held by the child.
        let path = NSTemporaryDirectory() + "held-\(UUID().uuidString)"
        defer { unlink(path) }
        guard case .success(let lock) = FileLock.acquire(path) else { return XCTFail("no lock") }
        let child = try SystemProcessRunner().launch(ProcessSpec(executable: "/bin/sleep", arguments: ["2"], environment: [:],
                                                                 inheritedDescriptors: [lock.descriptor]))
        lock.release()
        XCTAssertEqual(FileLock.isHeld(path), true, "restic (the child) still holds it")
        _ = child.wait()
        XCTAssertEqual(FileLock.isHeld(path), false)
    }
}
