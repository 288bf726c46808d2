package logging

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// New returns a logger writing to stderr at level ("debug", "info", "warn",
// "error") in format ("json" or "console").
func New(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("log format %q is not json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.EncoderConfig.TimeKey = "time"
	cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	cfg.Sampling = nil
	return cfg.Build()
}

// CheckLevel reports a level New would refuse.
func CheckLevel(level string) error {
	switch level {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("%q is not one of debug, info, warn, error", level)
}

// CheckFormat reports a format New would refuse.
func CheckFormat(format string) error {
	if format == "json" || format == "console" {
		return nil
	}
	return fmt.Errorf("%q is not json or console", format)
}

// UnaryServerInterceptor logs every gRPC call: failures at info with the
// error, successes at debug. When requestIDKey is set, the request id found
// under it in the call's metadata goes on the line (N11).
// The handler's context carries the request id, for FromContext.
//
// It is also where a server keeps its internals to itself (SPEC 7): a
// handler that panics is recovered and logged with its stack, and an
// internal error (codes Internal or Unknown, a panic included) reaches
// the client as "internal error" with the request id, its text only in
// the log.
func UnaryServerInterceptor(log *zap.Logger, requestIDKey string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		requestID := ""
		if requestIDKey != "" {
			if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(requestIDKey)) > 0 {
				requestID = md.Get(requestIDKey)[0]
				ctx = context.WithValue(ctx, requestIDKeyType{}, requestID)
			}
		}
		log := FromContext(ctx, log)
		resp, err = callRecovering(ctx, req, handler, log, info.FullMethod)
		if status.Code(err) == codes.Unknown && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
			// A handler that gave up with its call's context: the caller
			// ran out of time (or left), which is no internal error.
			err = status.FromContextError(err).Err()
		}
		fields := []zap.Field{zap.String("method", info.FullMethod), zap.Stringer("code", status.Code(err)),
			zap.Duration("elapsed", time.Since(start))}
		switch code := status.Code(err); {
		case err == nil:
			log.Debug("rpc", fields...)
		case code == codes.Internal || code == codes.Unknown:
			log.Error("rpc failed with an internal error", append(fields, zap.Error(err))...)
			msg := "internal error"
			if requestID != "" {
				msg += " (request id " + requestID + ")"
			}
			err = status.Error(codes.Internal, msg)
		default:
			log.Info("rpc failed", append(fields, zap.Error(err))...)
		}
		return resp, err
	}
}

// callRecovering calls handler, turning a panic into an internal error.
func callRecovering(ctx context.Context, req any, handler grpc.UnaryHandler, log *zap.Logger, method string) (resp any, err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("rpc handler panicked", zap.String("method", method), zap.Any("panic", v),
				zap.ByteString("stack", debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "panic: %v", v)
		}
	}()
	return handler(ctx, req)
}

type requestIDKeyType struct{}

// FromContext returns log with the request's id on it when ctx is a
// request's, so that every line logged while serving a request names it
// (N11); log itself otherwise.
func FromContext(ctx context.Context, log *zap.Logger) *zap.Logger {
	if id, ok := ctx.Value(requestIDKeyType{}).(string); ok {
		return log.With(zap.String("request_id", id))
	}
	return log
}
