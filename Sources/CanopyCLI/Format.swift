import CanopyCore
import CanopyHTTP
import Foundation

/// Output helpers: aligned tables for people, the API's JSON for `-o json`.
enum Format {
    /// A time as Canopy prints it (UTC, to the second).
    static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: date)
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func json(_ value: some Encodable) throws -> String {
        let e = APIJSON.encoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    static func age(_ date: Date?, now: Date = Date()) -> String {
        guard let date else { return "-" }
        let s = Int(now.timeIntervalSince(date))
        if s < 60 { return "\(max(0, s))s ago" }
        if s < 3600 { return "\(s / 60)m ago" }
        if s < 86400 { return "\(s / 3600)h ago" }
        return "\(s / 86400)d ago"
    }

    /// A count and its noun, plural unless the count is one: "1 GPU", "2 GPUs", "0 tasks".
    static func count(_ n: Int, _ noun: String) -> String {
        "\(n) \(noun)" + (n == 1 ? "" : "s")
    }

    /// "1 CPU", "2 CPUs", "500m CPU", "1500m CPUs" (plural above one CPU).
    static func cpus(_ millis: Int) -> String {
        "\(Quantity.formatCPU(millis)) CPU" + (millis > 1000 ? "s" : "")
    }

    static func resources(_ r: Resources, tasks: Int) -> String {
        var s = "\(cpus(r.cpuMillis)), \(Quantity.formatMemory(r.memoryMiB))"
        if r.gpus > 0 { s += ", " + count(r.gpus, r.gpuModel.map { "\($0) GPU" } ?? "GPU") }
        return tasks > 1 ? "\(tasks) tasks x (\(s))" : s
    }

    /// A workload's name, or "-" where none was given (the server then names it by its id).
    static func name(_ w: Workload) -> String {
        w.spec.name.isEmpty || w.spec.name == w.id ? "-" : w.spec.name
    }

    /// The `canopy ps` table; `showTenant` adds the TENANT column (an admin sees every tenant's workloads).
    static func workloads(_ items: [Workload], showTenant: Bool) -> String {
        let header = ["ID", "NAME"] + (showTenant ? ["TENANT"] : []) + ["OWNER", "QUEUE", "STATUS", "REASON", "RESOURCES", "CREATED", "COMMAND"]
        return table(
            header,
            items.map { w in
                [w.id, String(name(w).prefix(24))] + (showTenant ? [w.tenant] : []) + [
                    w.owner, w.spec.queue, status(w), w.reason?.code.rawValue ?? "-", resources(w.spec.resources, tasks: w.spec.tasks),
                    age(w.createdAt), String(oneLine(w.spec.command.joined(separator: " ")).prefix(40)),
                ]
            })
    }

    static func status(_ w: Workload) -> String {
        var s = w.phase.rawValue
        if let code = w.exitCode, w.phase.isTerminal { s += " (\(code))" }
        if w.phase == .pending, let p = w.queuePosition { s += " #\(p)" }
        return s
    }

    static func describe(_ w: Workload) -> String {
        var lines: [(String, String)] = [
            ("ID", w.id), ("Name", name(w)), ("Phase", w.phase.rawValue),
        ]
        if let r = w.reason { lines.append(("Reason", "\(r.code.rawValue): \(r.message)")) }
        if let p = w.queuePosition { lines.append(("Queue position", String(p))) }
        if let c = w.exitCode { lines.append(("Exit code", String(c))) }
        lines += [
            ("Queue", w.spec.queue), ("Priority", String(w.spec.priority)), ("Tenant", "\(w.tenant) (owner \(w.owner))"),
            ("Command", oneLine(w.spec.command.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " "))),
            ("Resources", resources(w.spec.resources, tasks: w.spec.tasks)),
        ]
        // The image by the id it was pinned to at submit, shortened as docker shows ids.
        if let image = w.spec.image {
            lines.append(("Image", image + (w.imageReference.map { " (\($0.hasPrefix("sha256:") ? String($0.prefix(19)) : $0))" } ?? "")))
        }
        for m in w.spec.mounts { lines.append(("Mount", "\(m.source) on \(m.target)\(m.readOnly ? " (read-only)" : "")")) }
        if let d = w.spec.maxDurationSeconds { lines.append(("Max duration", Quantity.formatDuration(d))) }
        if w.spec.kind == .interactive {
            let lease = w.spec.lease?.description ?? "-"
            lines.append(("Lease", w.leaseExpiresAt.map { "\(lease), ends \(Format.timestamp($0))" } ?? lease))
            if let r = w.restarts, r > 0 { lines.append(("Restarts", String(r))) }
            if let at = w.lastActivityAt, w.phase == .running {
                lines.append(("Last activity", "\(w.lastActivitySource ?? "-") at \(Format.timestamp(at)) (\(age(at)))"))
            }
        }
        for p in w.spec.ports {
            let urls = w.tasks.compactMap { t in t.endpoints?.first(where: { $0.port == p.port })?.url.map { w.tasks.count > 1 ? "task \(t.index): \($0)" : $0 }
            }
            lines.append(("Port", p.description + (urls.isEmpty ? "" : "  " + urls.joined(separator: "  "))))
        }
        if let wd = w.spec.workdir { lines.append(("Workdir", wd)) }
        for (k, v) in w.spec.env.sorted(by: { $0.key < $1.key }) { lines.append(("Env", "\(k)=\(v)")) }
        lines.append(("Created", "\(w.createdAt) (\(age(w.createdAt)))"))
        if let s = w.startedAt { lines.append(("Started", "\(s)")) }
        if let f = w.finishedAt { lines.append(("Finished", "\(f)")) }
        let width = lines.map(\.0.count).max() ?? 0
        var out = lines.map { "\($0.0.padding(toLength: width, withPad: " ", startingAt: 0))  \($0.1)" }.joined(separator: "\n")
        out +=
            "\n\nTasks:\n"
            + table(
                ["INDEX", "PHASE", "NODE", "GPUS", "PID/ID", "EXIT", "REASON"],
                w.tasks.map { t in
                    [
                        String(t.index), t.phase.rawValue, t.node ?? "-", t.gpus.isEmpty ? "-" : t.gpus.map(String.init).joined(separator: ","),
                        t.backendID ?? "-",
                        t.exitCode.map(String.init) ?? "-", t.reason?.message ?? "",
                    ]
                })
        return out
    }
}

/// `-o` output formats.
enum OutputFormat: String, CaseIterable, Sendable {
    case table, json
}

/// A command line on one line of a table: its line ends and tabs written as `\n` and `\t` (a start script has several).
func oneLine(_ text: String) -> String {
    text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t")
}
