import XCTest
@testable import CloudBackupCore
#if canImport(Glibc)
import Glibc
#endif

/// Which restic reads a backup's files (ReadAccess), and what an exit 3 then says. The image part (the
/// capability on the file, the kernel refusing it without `cap_add`) is in Tests/Container.
final class ReadAccessTests: XCTestCase {
    static let privileged = "/usr/local/libexec/cloud-backup/restic"
    static func status(bounding: String, noNewPrivileges: Bool = false) -> String {
        "Name:\tcloud-backup\nUmask:\t0022\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
            + "CapBnd:\t\(bounding)\nCapAmb:\t0000000000000000\nNoNewPrivs:\t\(noNewPrivileges ? 1 : 0)\n"
    }
    // Docker's default set (chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap,
    // net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap), and with DAC_READ_SEARCH added.
    static let dockerDefault = "00000000a80425fb"
    static let withReadSearch = "00000000a80425ff"

    func testTheDecisionFollowsTheBoundingSet() {
        XCTAssertEqual(ReadAccess.decide(processStatus: Self.status(bounding: Self.withReadSearch), installed: true, isRoot: false, restic: Self.privileged),
                       .everyFile(restic: Self.privileged))
        XCTAssertEqual(ReadAccess.decide(processStatus: Self.status(bounding: Self.dockerDefault), installed: true, isRoot: false, restic: Self.privileged),
                       .capabilityMissing, "the kernel would refuse to start the capability-bearing restic (EPERM)")
        XCTAssertEqual(ReadAccess.decide(processStatus: Self.status(bounding: Self.withReadSearch, noNewPrivileges: true), installed: true, isRoot: false,
                                         restic: Self.privileged), .noNewPrivileges)
        XCTAssertEqual(ReadAccess.decide(processStatus: Self.status(bounding: Self.withReadSearch), installed: false, isRoot: false, restic: Self.privileged),
                       .plain, "outside the image")
        XCTAssertEqual(ReadAccess.decide(processStatus: Self.status(bounding: Self.withReadSearch), installed: true, isRoot: true, restic: Self.privileged),
                       .plain, "root reads every file with the plain restic")
        XCTAssertEqual(ReadAccess.decide(processStatus: "Name:\tx\n", installed: true, isRoot: false, restic: Self.privileged), .plain,
                       "no bounding set to read: the restic that always starts")
        XCTAssertEqual(ReadAccess.everyFile(restic: Self.privileged).backupRestic, Self.privileged)
        XCTAssertEqual(ReadAccess.capabilityMissing.backupRestic, "restic")
    }

    func testThisProcessIsDetectedWithoutError() {
        // On the test machine there is no capability-bearing restic at that path: plain.
        if access(ReadAccess.installedRestic, X_OK) != 0 {
            XCTAssertEqual(ReadAccess.detect(), .plain)
        }
        XCTAssertEqual(ReadAccess.detect(restic: "/nonexistent/restic"), .plain)
    }

    // --- the job ---

    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "read-access-tests-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func context(_ runner: any ProcessRunning, _ access: ReadAccess, lines: LineCollector) -> JobContext {
        JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                   transport: HTTPTransport { _, _, _ in .init(status: 200, headers: [:]) },
                   hostName: "vm", sleep: { _ in }, backoffScale: 0.001, stdoutIsTerminal: true, readAccess: access)
    }

    func run(_ kind: ResticJob.Kind, _ access: ReadAccess, runner: any ProcessRunning, arguments: [String] = ["/backup"]) throws -> (Int32, String) {
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory,
                                                                       "RESTIC_REST_PORT": "1", "LOCK_WAIT_SECONDS": "1"],
                                                         needs: [.repositoryPassword])
        let lines = LineCollector()
        let code = ResticJob(kind: kind, userArguments: arguments, configuration: configuration, context: context(runner, access, lines: lines)).run()
        return (code, lines.text)
    }

    static let deniedOutput = "error: open /backup/db/secret: permission denied\nWarning: at least one source file could not be read\n"

    func testTheBackupReadsWithTheCapabilityBearingResticAndEverythingElseUsesThePlainOne() throws {
        let runner = FakeProcessRunner { spec, _ in
            ProcessResult(status: .exited(0), standardOutput: spec.arguments.first == "backup" ? "snapshot 1234abcd saved\n" : "{}")
        }
        let (code, log) = try run(.backup, .everyFile(restic: Self.privileged), runner: runner)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(runner.commands, ["\(Self.privileged) backup /backup", "restic cat snapshot 1234abcd --no-lock"],
                       "only the backup itself reads the files: the read-back runs the plain restic")
    }

    func testForgetAndCheckNeverUseIt() throws {
        for kind in [ResticJob.Kind.forget, .check] {
            let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
            _ = try run(kind, .everyFile(restic: Self.privileged), runner: runner, arguments: [])
            XCTAssertTrue(runner.specs.allSatisfy { $0.executable == "restic" }, "\(kind): \(runner.commands)")
        }
    }

    func testExitThreeWithoutTheCapabilityNamesTheFix() throws {
        let runner = FakeProcessRunner { spec, _ in
            spec.arguments.first == "backup" ? ProcessResult(status: .exited(3), standardOutput: "snapshot 1234abcd saved\n", standardError: Self.deniedOutput)
                : ProcessResult(status: .exited(0), standardOutput: "{}")
        }
        let (code, log) = try run(.backup, .capabilityMissing, runner: runner)
        XCTAssertEqual(code, 3, log)
        XCTAssertEqual(runner.specs.first?.executable, "restic")
        XCTAssertTrue(log.contains("1 file could not be read: permission denied: /backup/db/secret (open)"), log)
        XCTAssertTrue(log.contains("add the DAC_READ_SEARCH capability"), log)
        XCTAssertTrue(log.contains("`cap_add: [DAC_READ_SEARCH]`"), log)
        XCTAssertTrue(log.contains("`--cap-add DAC_READ_SEARCH`"), log)
        XCTAssertTrue(log.contains("`docker compose up -d` or `docker-compose up -d`"), log)
    }

    func testExitThreeForOtherReasonsOrOutsideTheImageKeepsTheGeneralAdvice() throws {
        let vanished = "error: lstat /backup/tmp/x: no such file or directory\n"
        XCTAssertFalse(ResticJob.unreadableFilesSentence(vanished, access: .capabilityMissing).contains("DAC_READ_SEARCH"),
                       "a file that vanished is not a permission problem")
        XCTAssertTrue(ResticJob.unreadableFilesSentence(Self.deniedOutput, access: .plain).contains("Give this user read access to them"))
        XCTAssertTrue(ResticJob.unreadableFilesSentence(Self.deniedOutput, access: .noNewPrivileges).contains("no-new-privileges"))
        XCTAssertTrue(ResticJob.unreadableFilesSentence(Self.deniedOutput, access: .everyFile(restic: Self.privileged))
            .contains("still could not read them"))
    }

    func testWhenTheKernelRefusesTheCapabilityTheBackupRunsWithThePlainRestic() throws {
        let fake = FakeProcessRunner { spec, _ in
            spec.arguments.first == "backup" ? ProcessResult(status: .exited(3), standardOutput: "snapshot 1234abcd saved\n", standardError: Self.deniedOutput)
                : ProcessResult(status: .exited(0), standardOutput: "{}")
        }
        let runner = RefusingRunner(base: fake, refused: Self.privileged)
        let (code, log) = try run(.backup, .everyFile(restic: Self.privileged), runner: runner)
        XCTAssertEqual(code, 3, log)
        XCTAssertEqual(fake.commands.first, "restic backup /backup")
        XCTAssertTrue(log.contains("warning: starting \(Self.privileged) failed: Operation not permitted: backing up with the plain restic"), log)
        XCTAssertTrue(log.contains("Give this user read access to them"), "the capability was not there after all:\n\(log)")
    }

    func testThePassthroughBacksUpWithItToo() throws {
        for (arguments, executable) in [(["backup", "/backup"], Self.privileged), (["snapshots"], "restic"), (["restore", "latest", "--target", "/r"], "restic")] {
            let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }
            let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RESTIC_REST_PORT": "1"],
                                                             needs: [.repositoryPassword])
            let lines = LineCollector()
            let code = ResticPassthrough(arguments: arguments, configuration: configuration,
                                         context: context(runner, .everyFile(restic: Self.privileged), lines: lines)).run()
            XCTAssertEqual(code, 0, lines.text)
            XCTAssertEqual(runner.specs.map(\.executable), [executable], "\(arguments)")
        }
    }

    func testResticRunAsRootOnAUsersStateDirectoryRegistersAsThatUser() throws {
        try XCTSkipUnless(geteuid() == 0, "needs root (the restore-with-owners case)")
        let state = directory + "/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        XCTAssertEqual(chown(state, 1000, 1000), 0)
        let registry = ResticRunRegistry(stateDirectory: state)
        let runner = RegisteringRunner(base: FakeProcessRunner { _, _ in ProcessResult(status: .exited(0)) }, registry: registry,
                                       hostName: "vm", log: Logger(sink: { _ in }))
        _ = try runner.launch(ProcessSpec(executable: "restic", arguments: ["restore", "latest", "--target", "/r"], environment: [:])).wait()
        let files = try FileManager.default.contentsOfDirectory(atPath: registry.directory)
        XCTAssertEqual(files.count, 1)
        for path in [registry.directory, registry.directory + "/" + files[0]] {
            var info = stat()
            XCTAssertEqual(stat(path, &info), 0)
            XCTAssertEqual(info.st_uid, 1000, path)
        }
    }

    // --- check's leftovers, the permission message ---

    func testCheckExplainsTheAdditionalFilesOfInterruptedBackups() throws {
        let output = "using temporary cache in /tmp/restic-check-cache-1\nload indexes\ncheck all packs\n"
            + "pack 3e0e5c5b: not referenced in any index\npack 9a6d1d4f: not referenced in any index\n"
            + "2 additional files were found in the repo, which likely contain duplicate data.\n"
            + "This is non-critical, you can run `restic prune` to correct this.\ncheck snapshots, trees and blobs\nno errors were found\n"
        let runner = FakeProcessRunner { _, _ in ProcessResult(status: .exited(0), standardOutput: output) }
        let (code, log) = try run(.check, .plain, runner: runner, arguments: [])
        XCTAssertEqual(code, 0, log)
        XCTAssertTrue(log.contains("check finished: no errors were found; 2 additional files (data no snapshot uses) found: what interrupted backups leave behind, harmless. "
                                   + "The next `forget --prune` that removes a snapshot deletes them, or now: `cloud-backup restic prune`"), log)
        XCTAssertEqual(ResticJob.additionalFiles("1 additional files were found in the repo, which likely contain duplicate data."), 1)
        XCTAssertNil(ResticJob.additionalFiles("no errors were found\n"))
    }

    func testTheCannotWriteMessageHasOnePeriodAndNamesTheUid() {
        let text = CloudBackupError.cannotWrite(path: "/home/user/.local/state/cloud-backup",
                                                reason: "You don’t have permission to save the file “cloud-backup” in the folder “state”.").description
        XCTAssertFalse(text.contains(".."), text)
        XCTAssertTrue(text.contains("uid \(getuid())"), text)
        XCTAssertTrue(text.contains("uid 1000"), text)
    }
}

/// A runner on which one executable cannot be started, as the kernel refuses a file whose
/// capabilities it cannot grant.
final class RefusingRunner: ProcessRunning, @unchecked Sendable {
    let base: FakeProcessRunner
    let refused: String
    init(base: FakeProcessRunner, refused: String) {
        self.base = base
        self.refused = refused
    }

    func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        if spec.executable == refused { throw CloudBackupError.system("starting \(refused)", EPERM) }
        return try base.launch(spec)
    }
}
