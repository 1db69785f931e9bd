import CanopyCore
import Foundation

// JSONValue is CanopyHTTP's; the scnet-create fuzz target compiles its source in beside this file instead.
#if canImport(CanopyHTTP)
    import CanopyHTTP
#endif

/// A create body as the seed documents it, read leniently (`containerPort` as an int or a string) and checked
/// strictly: every answer names the vendor's field.
struct InstanceRequest: Sendable, Equatable {
    struct Port: Sendable, Equatable, Codable {
        var containerPort: Int
        var protocolType: String
    }
    struct MountInfo: Sendable, Equatable, Codable {
        var sourcePath: String
        var targetPath: String
        var type: String
    }
    var name: String
    var description: String
    var taskType: String
    var acceleratorType: String
    var version: String
    var imagePath: String
    var timeoutLimit: String
    var lease: Lease
    var taskNumber: Int
    var resourceGroup: String
    var useStartScript: Bool
    var startScriptActionScope: String
    var startScriptContent: String
    var cpuNumber: Int
    var ramSize: Int
    var gpuNumber: Int
    var mounts: [MountInfo]
    var ports: [Port]

    static let taskTypes = ["ssh", "jupyter", "codeserver", "rstudio"]
    /// Canopy's bound on a workload's tasks (`WorkloadService.Limits.maxTasks`; a test keeps them equal).
    static let maxTasks = 1024
    static let acceleratorTypes = ["gpu", "cpu", "dcu", "mlu"]

    /// Reads and checks a create body.
    static func parse(_ body: JSONValue) throws(SCNetError) -> InstanceRequest {
        guard let o = body.objectValue else { throw SCNetError.invalid("body", "must be a JSON object") }
        func string(_ key: String, required: Bool = true, max: Int = 256) throws(SCNetError) -> String {
            guard let v = o[key], v != .null else {
                if required { throw SCNetError.missing(key) }
                return ""
            }
            guard let s = v.stringValue else { throw SCNetError.invalid(key, "must be a string, not \(v.typeName)") }
            guard s.count <= max else { throw SCNetError.invalid(key, "must be at most \(max) characters") }
            guard !s.unicodeScalars.contains(where: { $0.value == 0 }) else { throw SCNetError.invalid(key, "must not contain NUL") }
            return s
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws(SCNetError) -> Int {
            guard let v = o[key], v != .null else { throw SCNetError.missing(key) }
            guard let i = v.lenientInt else { throw SCNetError.invalid(key, "must be an integer, not \(v.display.isEmpty ? v.typeName : v.display)") }
            guard range.contains(i) else { throw SCNetError.invalid(key, "must be between \(range.lowerBound) and \(range.upperBound), not \(i)") }
            return i
        }
        func oneOf(_ key: String, _ allowed: [String], required: Bool = true) throws(SCNetError) -> String {
            let v = try string(key, required: required).lowercased()
            if !required && v.isEmpty { return "" }
            guard allowed.contains(v) else { throw SCNetError.invalid(key, "must be one of \(allowed.joined(separator: ", ")), not \"\(v)\"") }
            return v
        }

        let name = try string("instanceServiceName", max: 128)
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty else { throw SCNetError.invalid("instanceServiceName", "must not be empty") }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw SCNetError.invalid("instanceServiceName", "must not contain control characters")
        }
        let description = try string("description", required: false, max: 1024)
        let taskType = try oneOf("taskType", taskTypes)
        let accelerator = try oneOf("acceleratorType", acceleratorTypes)
        let version = try string("version", max: 512)
        let imagePath = try string("imagePath", max: 512)
        guard !version.isEmpty || !imagePath.isEmpty else { throw SCNetError.invalid("version", "name an image with version or imagePath") }
        let timeoutText = try string("timeoutLimit", max: 32)
        guard let lease = SCNetMapping.lease(timeoutText) else {
            throw SCNetError.invalid("timeoutLimit", "must be HH:MM:SS (at least 00:00:01, at most ten years) or unlimited, not \"\(timeoutText)\"")
        }
        let taskNumber = try int("taskNumber", 1...maxTasks)
        let resourceGroup = try string("resourceGroup", max: 128)
        guard !resourceGroup.isEmpty else { throw SCNetError.invalid("resourceGroup", "must not be empty") }
        guard let useValue = o["useStartScript"], useValue != .null else { throw SCNetError.missing("useStartScript") }
        guard let useStartScript = useValue.lenientBool else { throw SCNetError.invalid("useStartScript", "must be true or false") }
        let scope = try oneOf("startScriptActionScope", ["all", "header"], required: useStartScript)
        let script = try string("startScriptContent", required: useStartScript, max: 65536)
        if useStartScript && script.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw SCNetError.missing("startScriptContent")
        }
        let cpu = try int("cpuNumber", 1...1024)
        let ram = try int("ramSize", 1...(64 << 20))
        let gpus = try int("gpuNumber", 0...1024)
        if accelerator == "cpu" && gpus > 0 { throw SCNetError.invalid("gpuNumber", "must be 0 when acceleratorType is cpu") }

        var ports: [Port] = []
        if let v = o["containerPortInfoList"], v != .null {
            guard case .array(let items) = v else { throw SCNetError.invalid("containerPortInfoList", "must be an array") }
            guard items.count <= 16 else { throw SCNetError.invalid("containerPortInfoList", "at most 16 ports") }
            for (i, item) in items.enumerated() {
                let field = "containerPortInfoList[\(i)]"
                guard let p = item.objectValue else { throw SCNetError.invalid(field, "must be an object") }
                guard let portValue = p["containerPort"], portValue != .null else { throw SCNetError.missing(field + ".containerPort") }
                guard let port = portValue.lenientInt, (1...65535).contains(port) else {
                    throw SCNetError.invalid(field + ".containerPort", "must be a port between 1 and 65535 (an integer or a string of one)")
                }
                guard let protoValue = p["protocolType"], protoValue != .null else { throw SCNetError.missing(field + ".protocolType") }
                guard let proto = protoValue.stringValue?.uppercased(), proto == "HTTP" || proto == "SSH" else {
                    throw SCNetError.invalid(field + ".protocolType", "must be HTTP or SSH")
                }
                guard !ports.contains(where: { $0.containerPort == port }) else {
                    throw SCNetError.invalid(field + ".containerPort", "port \(port) is listed twice")
                }
                ports.append(Port(containerPort: port, protocolType: proto))
            }
        }
        var mounts: [MountInfo] = []
        if let v = o["mountInfoList"], v != .null {
            guard case .array(let items) = v else { throw SCNetError.invalid("mountInfoList", "must be an array") }
            guard items.count <= 16 else { throw SCNetError.invalid("mountInfoList", "at most 16 mounts") }
            for (i, item) in items.enumerated() {
                let field = "mountInfoList[\(i)]"
                guard let m = item.objectValue else { throw SCNetError.invalid(field, "must be an object") }
                func member(_ key: String) throws(SCNetError) -> String {
                    guard let x = m[key], x != .null else { throw SCNetError.missing("\(field).\(key)") }
                    guard let s = x.stringValue, !s.isEmpty, s.utf8.count <= 4096, !s.utf8.contains(0) else {
                        throw SCNetError.invalid("\(field).\(key)", "must be a non-empty path")
                    }
                    return s
                }
                let source = try member("sourcePath")
                let target = try member("targetPath")
                let type = try member("type").lowercased()
                guard type == "data" || type == "path" else { throw SCNetError.invalid("\(field).type", "must be data or path") }
                mounts.append(MountInfo(sourcePath: source, targetPath: target, type: type))
            }
        }
        return InstanceRequest(
            name: name, description: description, taskType: taskType, acceleratorType: accelerator, version: version, imagePath: imagePath,
            timeoutLimit: timeoutText.lowercased() == "unlimited" ? "unlimited" : timeoutText, lease: lease, taskNumber: taskNumber,
            resourceGroup: resourceGroup, useStartScript: useStartScript, startScriptActionScope: scope.isEmpty ? "all" : scope,
            startScriptContent: script, cpuNumber: cpu, ramSize: ram, gpuNumber: gpus, mounts: mounts, ports: ports)
    }

    /// The command an instance runs: its start script (in a subshell, so its `exit` or `cd` cannot end the service),
    /// on every task or task 0 only, then its service.
    static func command(service: [String], script: String?, scope: String) -> [String] {
        guard let script, !script.isEmpty else { return service }
        let run = scope == "header" ? "if [ \"${CANOPY_TASK_INDEX:-0}\" = 0 ]; then (\n\(script)\n); fi" : "(\n\(script)\n)"
        return ["sh", "-c", run + "\nexec \"$@\"", "sh"] + service
    }
}
