import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `cloud-backup restic …`: restic itself, with the repository and password preset. Standard input,
/// output and error are restic's own (interactive commands work); the exit code is restic's.
public struct ResticPassthrough {
    public let arguments: [String]
    public let configuration: Configuration
    public let context: JobContext

    public init(arguments: [String], configuration: Configuration, context: JobContext) {
        self.arguments = arguments
        self.configuration = configuration
        self.context = context
    }

    public func run() -> Int32 {
        if let failed = InfnSetup.prepareOrExitCode(configuration, context: context) { return failed }
        let subcommand = arguments.first { !$0.hasPrefix("-") }
        let route = RouteFinder.find(configuration: configuration, log: context.log,
                                     deletes: subcommand.map(RouteFinder.deletingCommands.contains) ?? false)
        context.log.info("restic using \(route)")
        let spec = ProcessSpec(
            // `restic backup` reads its files with the capability-bearing restic when it can run (ReadAccess).
            executable: subcommand == "backup" ? context.readAccess.backupRestic : "restic",
            arguments: arguments,
            environment: ResticCommand.environment(base: configuration.childEnvironment, route: route, password: configuration.resticPassword),
            standardInput: .inherit,
            standardOutput: .inherit,
            standardError: .inherit,
            processGroup: .foreground)
        do {
            // Registered like the jobs' restic, so a lock it leaves can be proven abandoned later.
            let runner = RegisteringRunner(base: context.runner, registry: ResticRunRegistry(stateDirectory: configuration.stateDirectory),
                                           hostName: context.hostName, log: context.log)
            let result = try runInterruptibly(spec, runner: runner, signals: context.signals,
                                              graceSeconds: configuration.stopGraceSeconds, log: context.log)
            return result.status.shellExitCode
        } catch let error as CloudBackupError {
            context.log.error(error.description)
            return error.exitCode
        } catch {
            context.log.error("\(error)")
            return ExitCode.software
        }
    }
}
