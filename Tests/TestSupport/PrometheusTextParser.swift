import Foundation

/// A parser for the Prometheus text exposition format (version 0.0.4), written from the format's
/// specification, to validate what the tool writes (promtool is not available here). It rejects what
/// the spec rejects and returns every sample.
public struct PrometheusTextParser {
    public struct Sample: Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    enum ParseError: Error, CustomStringConvertible {
        case invalid(line: Int, String)
        var description: String {
            if case .invalid(let line, let message) = self { return "line \(line): \(message)" }
            return "invalid"
        }
    }

    static let metricTypes: Set<String> = ["counter", "gauge", "histogram", "summary", "untyped"]

    static func isMetricName(_ name: Substring) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" || first == ":" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    static func isLabelName(_ name: Substring) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return !name.hasPrefix("__") && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    public static func parse(_ text: String) throws -> [Sample] {
        guard text.isEmpty || text.hasSuffix("\n") else { throw ParseError.invalid(line: 0, "the last line must end with a newline") }
        var samples: [Sample] = []
        var typed: [String: String] = [:]
        var helped: Set<String> = []
        var familiesWithSamples: Set<String> = []
        var seriesSeen: Set<String> = []
        var currentFamily: String?
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let number = index + 1
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let words = line.dropFirst().split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
                guard words.count >= 2, words[0] == "HELP" || words[0] == "TYPE" else { continue }  // other comments are allowed
                let name = String(words[1])
                guard isMetricName(words[1]) else { throw ParseError.invalid(line: number, "bad metric name \(name)") }
                if words[0] == "TYPE" {
                    guard words.count == 3, metricTypes.contains(String(words[2])) else { throw ParseError.invalid(line: number, "bad TYPE") }
                    guard typed[name] == nil else { throw ParseError.invalid(line: number, "second TYPE for \(name)") }
                    guard !familiesWithSamples.contains(name) else { throw ParseError.invalid(line: number, "TYPE after samples of \(name)") }
                    typed[name] = String(words[2])
                } else {
                    guard !helped.contains(name) else { throw ParseError.invalid(line: number, "second HELP for \(name)") }
                    helped.insert(name)
                }
                continue
            }
            // name{labels} value [timestamp]
            var rest = line[...]
            let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " || $0 == "\t" } ?? rest.endIndex
            let name = rest[..<nameEnd]
            guard isMetricName(name) else { throw ParseError.invalid(line: number, "bad metric name \(name)") }
            rest = rest[nameEnd...]
            var labels: [String: String] = [:]
            if rest.first == "{" {
                rest = rest.dropFirst()
                while true {
                    rest = rest.drop { $0 == " " }
                    if rest.first == "}" { rest = rest.dropFirst(); break }
                    guard let equals = rest.firstIndex(of: "=") else { throw ParseError.invalid(line: number, "label without =") }
                    let labelName = rest[..<equals].trimmingCharacters(in: .whitespaces)
                    guard isLabelName(Substring(labelName)) else { throw ParseError.invalid(line: number, "bad label name \(labelName)") }
                    rest = rest[rest.index(after: equals)...].drop { $0 == " " }
                    guard rest.first == "\"" else { throw ParseError.invalid(line: number, "label value must be quoted") }
                    rest = rest.dropFirst()
                    var value = ""
                    var closed = false
                    while let character = rest.first {
                        rest = rest.dropFirst()
                        if character == "\\" {
                            guard let escaped = rest.first else { break }
                            rest = rest.dropFirst()
                            switch escaped {
                            case "\\": value.append("\\")
                            case "\"": value.append("\"")
                            case "n": value.append("\n")
                            default: throw ParseError.invalid(line: number, "bad escape \\\(escaped)")
                            }
                        } else if character == "\"" {
                            closed = true
                            break
                        } else {
                            value.append(character)
                        }
                    }
                    guard closed else { throw ParseError.invalid(line: number, "unterminated label value") }
                    guard labels[labelName] == nil else { throw ParseError.invalid(line: number, "repeated label \(labelName)") }
                    labels[labelName] = value
                    rest = rest.drop { $0 == " " }
                    if rest.first == "," { rest = rest.dropFirst(); continue }
                    guard rest.first == "}" else { throw ParseError.invalid(line: number, "expected , or }") }
                }
            }
            let fields = rest.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 1 || fields.count == 2 else { throw ParseError.invalid(line: number, "expected a value and an optional timestamp") }
            guard let value = parseValue(fields[0]) else { throw ParseError.invalid(line: number, "bad value \(fields[0])") }
            if fields.count == 2, Int64(fields[1]) == nil { throw ParseError.invalid(line: number, "bad timestamp") }
            let family = String(name)
            if let current = currentFamily, current != family, familiesWithSamples.contains(family) {
                throw ParseError.invalid(line: number, "samples of \(family) are not grouped together")
            }
            currentFamily = family
            familiesWithSamples.insert(family)
            let series = family + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            guard seriesSeen.insert(series).inserted else { throw ParseError.invalid(line: number, "duplicate series \(series)") }
            samples.append(Sample(name: family, labels: labels, value: value))
        }
        return samples
    }

    static func parseValue(_ text: Substring) -> Double? {
        switch text {
        case "NaN": return .nan
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        default: return Double(text)
        }
    }
}
