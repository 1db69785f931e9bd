import CanopyCore
import Foundation

/// Finds the machine's GPUs: `nvidia-smi` where it exists, or an inventory declared as `MODEL:COUNT[,MODEL:COUNT]`.
public enum GPUDiscovery {
    /// Parses a declared inventory such as `T4:2` or `A100:4,T4:2`; indices run on across entries.
    public static func parseDeclared(_ text: String) throws -> [GPU] {
        var gpus: [GPU] = []
        for entry in text.split(separator: ",") {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let count = Int(parts[1]), (0...1024).contains(count) else {
                throw CanopyError.invalid("gpus", "expected MODEL:COUNT (e.g. T4:2), got \"\(entry)\"")
            }
            for _ in 0..<count { gpus.append(GPU(index: gpus.count, model: String(parts[0]))) }
        }
        return gpus
    }

    /// Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid,pci.bus_id --format=csv,noheader,nounits`;
    /// `minors` maps a PCI bus id (lowercase, 4-digit domain: `0000:18:00.0`) to the device's minor number.
    public static func parseNvidiaSMI(_ output: String, minors: [String: Int] = [:]) -> [GPU] {
        output.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= 4, let index = Int(f[0]) else { return nil }
            let minor = f.count >= 5 ? minors[normalizedBusID(f[4])] : nil
            return GPU(index: index, model: f[1], memoryMiB: Int(f[2]), uuid: f[3], minor: minor)
        }
    }

    /// `00000000:18:00.0` (nvidia-smi) and `0000:18:00.0` (/proc) as one form: 4-digit domain, lowercase.
    static func normalizedBusID(_ id: String) -> String {
        let lower = id.lowercased()
        guard let colon = lower.firstIndex(of: ":") else { return lower }
        let domain = lower[..<colon]
        return String(domain.suffix(4)) + lower[colon...]
    }

    /// Reads the driver's `Device Minor` per PCI bus id from `/proc/driver/nvidia/gpus/BUS/information`.
    public static func deviceMinors(root: String = "/proc/driver/nvidia/gpus") -> [String: Int] {
        var minors: [String: Int] = [:]
        for bus in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            guard let text = try? String(contentsOfFile: "\(root)/\(bus)/information", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("Device Minor:") {
                if let n = Int(line.dropFirst("Device Minor:".count).trimmingCharacters(in: .whitespaces)) { minors[normalizedBusID(bus)] = n }
            }
        }
        return minors
    }

    /// Parses `nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits` (`0, 100`); a GPU whose
    /// utilisation reads `[N/A]` is left out.
    public static func parseUtilization(_ output: String) -> [Int: Int] {
        var found: [Int: Int] = [:]
        for line in output.split(separator: "\n") {
            let f = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if f.count >= 2, let index = Int(f[0]), let percent = Int(f[1]) { found[index] = percent }
        }
        return found
    }

    /// Each GPU's current utilisation, from nvidia-smi; nil where it is missing or fails.
    public static func utilization() -> [Int: Int]? {
        guard let out = runSMI(["--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"]) else { return nil }
        return parseUtilization(out)
    }

    static func runSMI(_ arguments: [String]) -> String? {
        guard let smi = TaskUser.findProgram("nvidia-smi", path: ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: smi)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Runs nvidia-smi if it is on the PATH; nil where it is not, or fails.
    public static func discover() -> [GPU]? {
        guard let out = runSMI(["--query-gpu=index,name,memory.total,uuid,pci.bus_id", "--format=csv,noheader,nounits"]) else { return nil }
        return parseNvidiaSMI(out, minors: deviceMinors())
    }
}
