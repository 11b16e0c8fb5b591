package s3

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config selects a bucket (and a prefix in it) on an S3-compatible server. Credentials never come
// from the YAML/JSON config itself: they come from the environment (ApplyEnv) or from a credentials
// file, and String redacts them.
type Config struct {
	// Endpoint is host:port, or a URL whose scheme sets Secure (http:// or https://).
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	Bucket   string `yaml:"bucket" json:"bucket"`
	Prefix   string `yaml:"prefix" json:"prefix"`
	Region   string `yaml:"region" json:"region"`
	Secure   bool   `yaml:"secure" json:"secure"` // TLS
	// CredentialsFile is an AWS shared-credentials file ([profile] aws_access_key_id = ...,
	// aws_secret_access_key = ..., optional aws_session_token); Profile picks the section
	// (default "default"). Lines before any section count as the default profile.
	CredentialsFile string `yaml:"credentials_file" json:"credentials_file"`
	Profile         string `yaml:"profile" json:"profile"`

	AccessKey    string `yaml:"-" json:"-"`
	SecretKey    string `yaml:"-" json:"-"`
	SessionToken string `yaml:"-" json:"-"`

	// PartSize is the multipart part size in bytes (0: 16 MiB; S3 wants >= 5 MiB). Objects larger
	// than one part go up as multipart uploads, Threads parts at a time (0: 4).
	PartSize uint64 `yaml:"part_size" json:"part_size"`
	Threads  uint   `yaml:"threads" json:"threads"`
	// Timeout bounds each attempt of a call, a Get's body transfer included (0: 5 min).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// A call failing with transient errors (network, 5xx, throttling, an attempt's timeout) is
	// tried again, waiting Backoff (0: 200 ms), doubled each time up to MaxBackoff (0: 15 s), for
	// RetryFor (0: 5 min) from its first attempt: an S3 outage of a few minutes pauses the run
	// instead of ending it. Attempts > 0 also caps the number of tries.
	Attempts   int           `yaml:"attempts" json:"attempts"`
	Backoff    time.Duration `yaml:"backoff" json:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff" json:"max_backoff"`
	RetryFor   time.Duration `yaml:"retry_for" json:"retry_for"`
	// TempDir spools uploads from readers that cannot seek (default: the system temp dir): the
	// SHA-256 must be known before the upload starts, and retries must be able to start over.
	TempDir string `yaml:"temp_dir" json:"temp_dir"`
}

// Defaults.
const (
	DefaultPartSize   = 16 << 20
	MinPartSize       = 5 << 20
	DefaultThreads    = 4
	DefaultTimeout    = 5 * time.Minute
	DefaultBackoff    = 200 * time.Millisecond
	DefaultMaxBackoff = 15 * time.Second
	DefaultRetryFor   = 5 * time.Minute
)

// String describes the config without its secrets.
func (c Config) String() string {
	scheme := "http"
	if c.Secure {
		scheme = "https"
	}
	creds := "none"
	switch {
	case c.AccessKey != "" || c.SecretKey != "":
		creds = "<redacted>"
	case c.CredentialsFile != "":
		creds = "file " + c.CredentialsFile
	}
	return fmt.Sprintf("s3://%s/%s at %s://%s (region %q, credentials %s)", c.Bucket, c.Prefix, scheme, c.Endpoint, c.Region, creds)
}

// GoString keeps %#v from printing the secrets too.
func (c Config) GoString() string { return "s3.Config{" + c.String() + "}" }

// Parse reads "s3://bucket/prefix" with optional query parameters endpoint, region, secure,
// part_size, threads, timeout, attempts, credentials_file and profile, e.g.
// "s3://ckpts/run7?endpoint=127.0.0.1:7070&secure=false". Credentials are never read from the URL.
func Parse(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("s3 url %q: %w", raw, err)
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3 url %q: scheme %q, want s3://bucket/prefix", raw, u.Scheme)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("s3 url: credentials in the url are refused; use the environment or a credentials file")
	}
	c := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	if c.Bucket == "" {
		return Config{}, fmt.Errorf("s3 url %q: no bucket", raw)
	}
	q := u.Query()
	for k, vs := range q {
		v := vs[len(vs)-1]
		var err error
		switch k {
		case "endpoint":
			c.Endpoint = v
		case "region":
			c.Region = v
		case "secure":
			c.Secure, err = strconv.ParseBool(v)
		case "part_size":
			c.PartSize, err = strconv.ParseUint(v, 10, 64)
		case "threads":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 16)
			c.Threads = uint(n)
		case "timeout":
			c.Timeout, err = time.ParseDuration(v)
		case "attempts":
			c.Attempts, err = strconv.Atoi(v)
		case "retry_for":
			c.RetryFor, err = time.ParseDuration(v)
		case "credentials_file":
			c.CredentialsFile = v
		case "profile":
			c.Profile = v
		default:
			return Config{}, fmt.Errorf("s3 url %q: unknown parameter %q", raw, k)
		}
		if err != nil {
			return Config{}, fmt.Errorf("s3 url %q: parameter %s=%q: %w", raw, k, v, err)
		}
	}
	return c, nil
}

// ApplyEnv fills what the config leaves empty from the environment (getenv is os.Getenv in
// binaries): endpoint from BICOT_S3_ENDPOINT or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, region
// from BICOT_S3_REGION or AWS_REGION, the credentials file from BICOT_S3_CREDENTIALS_FILE, and
// the keys from BICOT_S3_ACCESS_KEY / BICOT_S3_SECRET_KEY, else AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN).
func (c *Config) ApplyEnv(getenv func(string) string) {
	first := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	if c.Endpoint == "" {
		c.Endpoint = first("BICOT_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	if c.Region == "" {
		c.Region = first("BICOT_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
	}
	if c.CredentialsFile == "" {
		c.CredentialsFile = getenv("BICOT_S3_CREDENTIALS_FILE")
	}
	if c.AccessKey == "" && c.SecretKey == "" {
		if ak, sk := getenv("BICOT_S3_ACCESS_KEY"), getenv("BICOT_S3_SECRET_KEY"); ak != "" || sk != "" {
			c.AccessKey, c.SecretKey = ak, sk
			c.SessionToken = getenv("BICOT_S3_SESSION_TOKEN")
		} else if ak, sk := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); ak != "" || sk != "" {
			c.AccessKey, c.SecretKey = ak, sk
			c.SessionToken = getenv("AWS_SESSION_TOKEN")
		}
	}
}

// normalize validates the config, loads the credentials file when the keys are not set yet, and
// fills defaults.
func (c Config) normalize() (Config, error) {
	if c.Bucket == "" {
		return c, errors.New("s3 config: no bucket")
	}
	if c.Endpoint == "" {
		return c, fmt.Errorf("s3 config for bucket %s: no endpoint (set endpoint or BICOT_S3_ENDPOINT)", c.Bucket)
	}
	if strings.Contains(c.Endpoint, "://") {
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return c, fmt.Errorf("s3 config: endpoint %q: want host:port or http(s)://host:port", c.Endpoint)
		}
		switch u.Scheme {
		case "https":
			c.Secure = true
		case "http":
			c.Secure = false
		default:
			return c, fmt.Errorf("s3 config: endpoint %q: scheme %q, want http or https", c.Endpoint, u.Scheme)
		}
		c.Endpoint = u.Host
	}
	c.Prefix = strings.Trim(c.Prefix, "/")
	if c.Prefix != "" {
		if err := validateKey(c.Prefix); err != nil {
			return c, fmt.Errorf("s3 config: prefix: %w", err)
		}
	}
	if c.AccessKey == "" && c.SecretKey == "" && c.CredentialsFile != "" {
		if err := c.loadCredentialsFile(); err != nil {
			return c, err
		}
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return c, fmt.Errorf("s3 config for bucket %s: no credentials: set BICOT_S3_ACCESS_KEY and BICOT_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or credentials_file", c.Bucket)
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < MinPartSize {
		return c, fmt.Errorf("s3 config: part size %d bytes, S3 wants at least %d", c.PartSize, MinPartSize)
	}
	if c.Threads == 0 {
		c.Threads = DefaultThreads
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.RetryFor == 0 {
		c.RetryFor = DefaultRetryFor
	}
	if c.Timeout < 0 || c.Attempts < 0 || c.Backoff < 0 || c.MaxBackoff < 0 || c.RetryFor < 0 {
		return c, fmt.Errorf("s3 config: negative timeout %v, attempts %d, backoff %v, max_backoff %v or retry_for %v",
			c.Timeout, c.Attempts, c.Backoff, c.MaxBackoff, c.RetryFor)
	}
	return c, nil
}

func (c *Config) loadCredentialsFile() error {
	f, err := os.Open(c.CredentialsFile)
	if err != nil {
		return fmt.Errorf("s3 credentials file: %w", err)
	}
	defer f.Close()
	profile := c.Profile
	if profile == "" {
		profile = "default"
	}
	section := "default"
	found := false
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return fmt.Errorf("s3 credentials file %s line %d: unterminated section", c.CredentialsFile, ln)
			}
			section = strings.TrimSpace(strings.TrimPrefix(line[1:len(line)-1], "profile "))
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			// Never echo the line: it may hold a secret.
			return fmt.Errorf("s3 credentials file %s line %d: want key = value", c.CredentialsFile, ln)
		}
		if section != profile {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "aws_access_key_id", "access_key_id", "access_key":
			c.AccessKey, found = v, true
		case "aws_secret_access_key", "secret_access_key", "secret_key":
			c.SecretKey, found = v, true
		case "aws_session_token", "session_token":
			c.SessionToken = v
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("s3 credentials file %s: %w", c.CredentialsFile, err)
	}
	if !found {
		return fmt.Errorf("s3 credentials file %s: no keys for profile %q", c.CredentialsFile, profile)
	}
	return nil
}
