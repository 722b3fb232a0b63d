import Foundation

/// One subcommand, defined once — its name, help, argument rule, what it needs and how it runs — in
/// the manner of swift-argument-parser's command types (without the package). The parser, the
/// dispatcher and the help all read `Commands.all`; adding a subcommand is adding one value there.
public struct Command: Sendable {
    /// What may follow the subcommand's name.
    public enum Arguments: Sendable, Equatable {
        /// Nothing: it is configured by environment variables.
        case none
        /// Only these flags.
        case flags([String])
        /// Anything, handed to restic. `--help` alone shows our help when `ownHelp`, restic's otherwise.
        case forRestic(ownHelp: Bool)
        /// Options of its own (`restore`), checked by the parser: a mistake is a usage error (64)
        /// before any configuration is read.
        case options(Options)
    }

    /// `--name VALUE` / `--name=VALUE` options, switches, and up to `operands.count` operands, in any
    /// order; `--` ends the options.
    public struct Options: Sendable, Equatable {
        /// Options taking a value, each given at most once, or any number of times when `repeatable`.
        public var valued: [String]
        public var repeatable: [String]
        public var switches: [String]
        /// Valued options that must be given.
        public var required: [String]
        /// Names of the optional operands, for messages ("SNAPSHOT").
        public var operands: [String]
        /// The overview's argument line, e.g. "[SNAPSHOT] --target DIR [--include PATH]… [--overwrite]".
        public var synopsis: String

        public init(valued: [String], repeatable: [String] = [], switches: [String], required: [String], operands: [String], synopsis: String) {
            self.valued = valued
            self.repeatable = repeatable
            self.switches = switches
            self.required = required
            self.operands = operands
            self.synopsis = synopsis
        }

        public struct Parsed: Sendable, Equatable {
            public var values: [String: [String]] = [:]
            public var switches: Set<String> = []
            public var operands: [String] = []
        }

        public func parse(_ arguments: [String], command: String) throws -> Parsed {
            var parsed = Parsed()
            var index = 0
            var optionsEnded = false
            func usage(_ problem: String) -> CloudBackupError {
                .usage("\(command): \(problem). Usage: cloud-backup \(command) \(synopsis) (see `cloud-backup \(command) --help`).")
            }
            while index < arguments.count {
                let argument = arguments[index]
                index += 1
                if !optionsEnded && argument == "--" { optionsEnded = true; continue }
                guard !optionsEnded, argument.hasPrefix("-"), argument != "-" else {
                    guard parsed.operands.count < operands.count else {
                        throw usage(operands.isEmpty ? "unexpected argument \(shellQuoted(argument))" : "unexpected argument \(shellQuoted(argument)) (only one \(operands.joined(separator: " ")) may be given)")
                    }
                    parsed.operands.append(argument)
                    continue
                }
                let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
                if switches.contains(argument) {
                    parsed.switches.insert(argument)
                } else if valued.contains(name) {
                    let value: String
                    if name != argument {
                        value = String(argument.dropFirst(name.count + 1))
                    } else {
                        guard index < arguments.count else { throw usage("\(name) needs a value") }
                        value = arguments[index]
                        index += 1
                    }
                    guard !value.isEmpty else { throw usage("\(name) needs a value") }
                    if parsed.values[name] != nil && !repeatable.contains(name) { throw usage("\(name) may be given only once") }
                    parsed.values[name, default: []].append(value)
                } else {
                    throw usage("unknown option \(shellQuoted(argument))")
                }
            }
            if let missing = required.first(where: { parsed.values[$0] == nil }) {
                throw usage("\(missing) is required")
            }
            return parsed
        }
    }

    /// How the command starts.
    public enum Setup: Sendable {
        /// Without the configuration: it reads the environment itself (help, status, the credential process).
        case standalone(@Sendable (_ arguments: [String], _ environment: [String: String]) -> Int32)
        /// With the validated configuration and a job context; when the configuration is invalid the
        /// run fails with exit 78, and `pingsFailureTo` (a check URL variable) is told so.
        case configured(ConfigurationNeeds, pingsFailureTo: String?,
                        @Sendable (_ arguments: [String], _ configuration: Configuration, _ context: JobContext) -> Int32)
    }

    public let name: String
    /// One line for the overview.
    public let summary: String
    /// The whole `--help` text.
    public let help: String
    public let arguments: Arguments
    /// Run by other programs, not people (not listed in the overview).
    public let hidden: Bool
    public let setup: Setup

    public init(name: String, summary: String, help: String, arguments: Arguments = .none, hidden: Bool = false, setup: Setup) {
        self.name = name
        self.summary = summary
        self.help = help
        self.arguments = arguments
        self.hidden = hidden
        self.setup = setup
    }
}

/// What a command line asks for.
public enum ParsedCommandLine: Sendable, Equatable {
    case help(topic: String?)
    case version
    case run(name: String, arguments: [String])

    /// Reads argv (without the program name) against the table of commands.
    public static func parse(_ arguments: [String], commands: [Command] = Commands.all) throws -> ParsedCommandLine {
        guard let first = arguments.first else { return .help(topic: nil) }
        let rest = Array(arguments.dropFirst())
        switch first {
        case "-h", "--help": return .help(topic: nil)
        case "help": return .help(topic: rest.first)
        case "--version", "version": return .version
        default: break
        }
        guard let command = commands.first(where: { $0.name == first }) else {
            let visible = commands.filter { !$0.hidden }.map(\.name) + ["help"]
            let hint = first.hasPrefix("-") ? "" : (suggestion(for: first, among: visible).map { " Did you mean `\($0)`?" } ?? "")
            throw CloudBackupError.usage("unknown subcommand or option \(shellQuoted(first)).\(hint) Run `cloud-backup --help` for the list.")
        }
        let asksHelp = rest == ["--help"] || rest == ["-h"]
        switch command.arguments {
        case .forRestic(let ownHelp):
            return ownHelp && asksHelp ? .help(topic: command.name) : .run(name: command.name, arguments: rest)
        case .none:
            if asksHelp { return .help(topic: command.name) }
            if let unexpected = rest.first {
                throw CloudBackupError.usage("\(command.name) takes no arguments (got \(shellQuoted(unexpected))); it is configured by environment variables, see `cloud-backup \(command.name) --help`.")
            }
            return .run(name: command.name, arguments: [])
        case .options(let options):
            if asksHelp { return .help(topic: command.name) }
            _ = try options.parse(rest, command: command.name)
            return .run(name: command.name, arguments: rest)
        case .flags(let allowed):
            if asksHelp { return .help(topic: command.name) }
            if let unexpected = rest.first(where: { !allowed.contains($0) }) {
                throw CloudBackupError.usage("\(command.name) takes only \(allowed.joined(separator: ", ")) (got \(shellQuoted(unexpected))).")
            }
            return .run(name: command.name, arguments: rest)
        }
    }

    /// The closest name within two typos.
    static func suggestion(for word: String, among names: [String]) -> String? {
        names.map { ($0, editDistance(word, $0)) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }?.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
