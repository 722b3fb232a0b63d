import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Which process listens on a TCP port, from /proc (Linux): the socket's inode in /proc/net/tcp{,6},
/// then the process holding a descriptor to it. Only processes we may inspect are found.
public struct ListeningProcess: Sendable, Equatable {
    public var pid: pid_t
    public var name: String
    public var arguments: [String]
    public var parentPID: pid_t
    public var parentName: String
}

public enum PortOwner {
    public static func find(port: Int) -> ListeningProcess? {
        var inodes: Set<String> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                // sl local_address rem_address st … inode (field 9); st 0A = LISTEN
                guard fields.count > 9, fields[3] == "0A",
                      let portHex = fields[1].split(separator: ":").last, Int(portHex, radix: 16) == port else { continue }
                inodes.insert(String(fields[9]))
            }
        }
        guard !inodes.isEmpty else { return nil }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(entry)/fd") else { continue }
            for descriptor in descriptors {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/fd/\(descriptor)"),
                      target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast())) else { continue }
                let parent = parentPID(of: pid)
                return ListeningProcess(pid: pid, name: processName(pid), arguments: commandLine(pid),
                                        parentPID: parent, parentName: parent > 0 ? processName(parent) : "")
            }
        }
        return nil
    }

    static func processName(_ pid: pid_t) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func commandLine(_ pid: pid_t) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    static func parentPID(of pid: pid_t) -> pid_t {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) ?? 0 : 0
    }
}
