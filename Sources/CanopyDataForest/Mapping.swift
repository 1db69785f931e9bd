import CanopyCore
import Crypto
import Foundation

/// Pure mappings between Canopy's workload model and Data Forest's vocabulary, tested table by table.
enum DataForestMapping {
    /// An AI app is a YARN application: `state` is its YarnApplicationState, `finalStatus` its FinalApplicationStatus.
    static func yarn(_ phase: Phase) -> (state: String, finalStatus: String) {
        switch phase {
        case .pending: ("ACCEPTED", "UNDEFINED")
        case .starting, .running, .stopping: ("RUNNING", "UNDEFINED")
        case .succeeded: ("FINISHED", "SUCCEEDED")
        case .failed: ("FAILED", "FAILED")
        case .cancelled, .stopped: ("KILLED", "KILLED")
        }
    }

    /// A container's state (YARN's ContainerState) from its task's phase.
    static func containerStatus(_ phase: Phase) -> String {
        switch phase {
        case .pending: "NEW"
        case .starting, .running, .stopping: "RUNNING"
        case .succeeded, .failed, .cancelled, .stopped: "COMPLETE"
        }
    }

    /// The account id of a tenant: a UUID's 128 bits in base62 (at most 22 characters), derived from the tenant's
    /// name so it is stable across restarts and the same in every answer.
    static func accountID(tenant: String) -> String {
        let digest = Array(SHA256.hash(data: Data("canopy-account:\(tenant)".utf8)))
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<8 { hi = hi << 8 | UInt64(digest[i]) }
        for i in 8..<16 { lo = lo << 8 | UInt64(digest[i]) }
        // Version 5-style UUID bits, so it is a UUID like the vendor's.
        hi = (hi & ~0xF000) | 0x5000
        lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return Base62.encode(hi, lo)
    }

    /// YARN's application id for a workload.
    static func appID(_ w: Workload) -> String {
        String(format: "application_%lld_%04lld", Int64(w.createdAt.timeIntervalSince1970 * 1000), w.seq)
    }

    /// YARN's container id for a task (attempt 01; container 1 is the application master, so tasks start at 2).
    static func containerID(_ w: Workload, task: Int) -> String {
        String(format: "container_%lld_%04lld_01_%06d", Int64(w.createdAt.timeIntervalSince1970 * 1000), w.seq, task + 2)
    }

    /// An AI app's name: the prefix plus two random 4-character groups, as `****-cvbp-1zqz` in the vendor's example.
    static func appName(prefix: String) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        func group() -> String { String((0..<4).map { _ in alphabet.randomElement()! }) }
        return "\(prefix)-\(group())-\(group())"
    }

    /// Timestamps as the vendor writes them: ISO-8601 with the offset of the configured zone, milliseconds when
    /// there are any; the zero time (`1970-01-01T09:00:00+09:00` in Seoul) stands for "not yet".
    static func timestamp(_ date: Date?, zone: TimeZone) -> String {
        let d = date ?? Date(timeIntervalSince1970: 0)
        let millis = Int64((d.timeIntervalSince1970 * 1000).rounded())
        let seconds = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
        let fraction = millis - seconds * 1000
        let style = Date.ISO8601FormatStyle(timeZone: zone).timeZoneSeparator(.colon)
        var text = style.format(Date(timeIntervalSince1970: TimeInterval(seconds)))
        // The vendor writes +00:00 where ISO-8601 allows Z.
        if text.hasSuffix("Z") { text = String(text.dropLast()) + "+00:00" }
        // Milliseconds are written by hand: formatting a binary floating-point fraction can round .086 down to .085.
        if fraction != 0 { text.insert(contentsOf: String(format: ".%03lld", fraction), at: text.index(text.endIndex, offsetBy: -6)) }
        return text
    }

    /// Elapsed milliseconds: from submission to the end, or to now while it has not ended (YARN's elapsedTime).
    static func elapsedMillis(_ w: Workload, now: Date) -> Int64 {
        max(0, Int64(((w.finishedAt ?? now).timeIntervalSince(w.createdAt) * 1000).rounded()))
    }

    // MARK: validation

    static let imagePattern = "^(dataforest/)?([a-z0-9._-]{1,30}):([a-z0-9._-]{1,20})$"
    /// Compiled once; matching does not mutate it.
    nonisolated(unsafe) static let imageRegex = try! Regex(imagePattern)

    /// The vendor's image rule; the message is the one the vendor answers (seed 001).
    static func checkImage(_ image: String, field: String) throws {
        guard (try? imageRegex.wholeMatch(in: image)) != nil else {
            throw DataForestError.invalid(field, image, "\"\(imagePattern)\"と一致する必要があります")
        }
    }

    /// A workspace's configuration names the image its apps run, as the vendor requires: empty, null or missing is
    /// refused (at create and setConfiguration; a submission may still name another).
    static func requireImage(_ c: AiAppTypeSpec, field prefix: String) throws {
        guard nonEmpty(c.docker?.image) != nil else { throw DataForestError.invalid("\(prefix).docker.image", c.docker?.image ?? "", "must not be empty") }
    }

    /// The image catalog's name for a vendor image: `dataforest/` is the vendor's registry namespace, so
    /// `dataforest/tensorflow:r2.3.1-py3` and `tensorflow:r2.3.1-py3` are the same catalog image.
    static func catalogName(_ image: String) -> String {
        image.hasPrefix("dataforest/") ? String(image.dropFirst("dataforest/".count)) : image
    }

    /// Workspace names: at most 15 characters, a lowercase letter first, then lowercase letters, digits and single
    /// hyphens, not ending with a hyphen. Returns why not, or nil when valid.
    static func workspaceNameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "must not be empty" }
        if bytes.count > 15 { return "must be at most 15 characters" }
        guard (97...122).contains(bytes[0]) else { return "must start with a lowercase letter" }
        for (i, c) in bytes.enumerated() {
            let ok = (97...122).contains(c) || (48...57).contains(c) || c == 45
            if !ok { return "may contain only lowercase letters, digits and hyphens" }
            if c == 45 && i > 0 && bytes[i - 1] == 45 { return "must not contain consecutive hyphens" }
        }
        if bytes.last == 45 { return "must not end with a hyphen" }
        return nil
    }

    /// Name prefixes: 2 to 8 characters (the vendor documents only the length; its own example is `****`), no
    /// white space, slashes or control characters.
    static func namePrefixProblem(_ prefix: String) -> String? {
        let count = prefix.count
        if count < 2 || count > 8 { return "size must be between 2 and 8" }
        if prefix.unicodeScalars.contains(where: { CharacterSet.whitespacesAndNewlines.contains($0) || CharacterSet.controlCharacters.contains($0) || $0 == "/" }) {
            return "must not contain white space, '/' or control characters"
        }
        return nil
    }

    // MARK: configuration into a workload

    /// The request's fields over the workspace's configuration: set fields win, field by field.
    static func merge(_ request: SubmitAiAppRequest, over config: AiAppTypeSpec) -> (docker: AiAppDocker, resource: AiAppResource, data: AiAppData, queue: String?) {
        let base = config.docker ?? AiAppDocker()
        let d = request.docker ?? AiAppDocker()
        var env = base.env ?? [:]
        for (k, v) in d.env ?? [:] { env[k] = v }
        let docker = AiAppDocker(
            args: d.args ?? base.args, command: nonEmpty(d.command) ?? base.command, env: env, exposeTcpPorts: d.exposeTcpPorts ?? base.exposeTcpPorts,
            image: nonEmpty(d.image) ?? base.image, workdir: nonEmpty(d.workdir) ?? base.workdir)
        let br = config.resource ?? AiAppResource()
        let r = request.resource ?? AiAppResource()
        let resource = AiAppResource(
            cpuCount: r.cpuCount ?? br.cpuCount, gpuCount: r.gpuCount ?? br.gpuCount, gpuModel: nonEmpty(r.gpuModel) ?? br.gpuModel,
            memoryMb: r.memoryMb ?? br.memoryMb)
        let bd = config.data ?? AiAppData()
        let rd = request.data ?? AiAppData()
        let data = AiAppData(input: rd.input ?? bd.input, output: rd.output ?? bd.output)
        return (docker, resource, data, nonEmpty(request.queueName) ?? nonEmpty(config.queueName))
    }

    static func nonEmpty(_ s: String?) -> String? {
        guard let s, !s.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        return s
    }

    /// The shell command line the vendor runs: `command` then `args`.
    static func commandLine(_ docker: AiAppDocker) -> [String] {
        var line = docker.command ?? ""
        if let args = nonEmpty(docker.args) { line += " " + args }
        return ["/bin/sh", "-c", line]
    }

    /// Checks the resource block; the defaults are 1 CPU, 1024 MB and no GPU.
    static func resources(_ r: AiAppResource, field prefix: String) throws -> Resources {
        let cpus = r.cpuCount ?? 1
        guard (1...1024).contains(cpus) else { throw DataForestError.invalid("\(prefix).cpuCount", String(cpus), "must be between 1 and 1024") }
        let gpus = r.gpuCount ?? 0
        guard (0...8).contains(gpus) else { throw DataForestError.invalid("\(prefix).gpuCount", String(gpus), "must be between 0 and 8") }
        let memory = r.memoryMb ?? 1024
        guard (1...16 * 1024 * 1024).contains(memory) else {
            throw DataForestError.invalid("\(prefix).memoryMb", String(memory), "must be between 1 and 16777216")
        }
        if let m = r.gpuModel, m.utf8.count > 64 { throw DataForestError.invalid("\(prefix).gpuModel", m, "must be at most 64 characters") }
        // A GPU model only means something with GPUs: the vendor's samples send "T4" with a count of 0.
        return Resources(cpuMillis: cpus * 1000, memoryMiB: memory, gpus: gpus, gpuModel: gpus > 0 ? nonEmpty(r.gpuModel) : nil)
    }

    /// Checks the data block and maps it to Canopy's staging.
    static func staging(_ d: AiAppData, field prefix: String) throws -> DataStaging {
        var staging = DataStaging()
        for (i, input) in (d.input ?? []).enumerated() {
            guard let hdfs = nonEmpty(input.hdfs) else { throw DataForestError.invalid("\(prefix).input[\(i)].hdfs", input.hdfs ?? "", "must not be empty") }
            guard DataPath.normalize(hdfs) != nil else { throw DataForestError.invalid("\(prefix).input[\(i)].hdfs", hdfs, "is not a valid path") }
            guard let path = nonEmpty(input.path) else { throw DataForestError.invalid("\(prefix).input[\(i)].path", input.path ?? "", "must not be empty") }
            staging.inputs.append(DataInput(source: hdfs, path: path))
        }
        for (i, output) in (d.output ?? []).enumerated() {
            guard let hdfs = nonEmpty(output.hdfs) else { throw DataForestError.invalid("\(prefix).output[\(i)].hdfs", output.hdfs ?? "", "must not be empty") }
            guard let p = DataPath.normalize(hdfs), p != "/" else { throw DataForestError.invalid("\(prefix).output[\(i)].hdfs", hdfs, "is not a valid path") }
            guard let path = nonEmpty(output.path) else { throw DataForestError.invalid("\(prefix).output[\(i)].path", output.path ?? "", "must not be empty") }
            staging.outputs.append(DataOutput(path: path, destination: hdfs, overwrite: output.overwrite ?? false))
        }
        return staging
    }

    static func checkQueueName(_ name: String, field: String) throws {
        guard Queue.isValidName(name) else { throw DataForestError.invalid(field, name, Queue.nameRule) }
    }

    /// Ports to expose; 0 is accepted as the placeholder the vendor's samples send.
    static func checkPorts(_ ports: [Int]?, field: String) throws {
        for (i, p) in (ports ?? []).enumerated() where !(0...65535).contains(p) {
            throw DataForestError.invalid("\(field)[\(i)]", String(p), "must be between 1 and 65535")
        }
    }

    /// Checks a configuration as create and setConfiguration receive it (fields are optional there: apps fill the gaps).
    static func checkConfiguration(_ c: AiAppTypeSpec, field prefix: String) throws {
        if let image = nonEmpty(c.docker?.image) { try checkImage(image, field: "\(prefix).docker.image") }
        if let r = c.resource { _ = try resources(r, field: "\(prefix).resource") }
        if let d = c.data { _ = try staging(d, field: "\(prefix).data") }
        if let q = nonEmpty(c.queueName) { try checkQueueName(q, field: "\(prefix).queueName") }
        try checkPorts(c.docker?.exposeTcpPorts, field: "\(prefix).docker.exposeTcpPorts")
        if let n = c.name, n.count > 255 { throw DataForestError.invalid("\(prefix).name", n, "must be at most 255 characters") }
    }
}
