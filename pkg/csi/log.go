package csi

import "log/slog"

// slogLevel keeps the frequent, boring calls out of the default log.
func slogLevel(method string, err error) slog.Level {
	switch method {
	case "Probe", "GetPluginInfo", "GetPluginCapabilities", "NodeGetCapabilities", "NodeGetVolumeStats", "NodeGetInfo":
		if err == nil {
			return slog.LevelDebug
		}
	}
	if err != nil {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
