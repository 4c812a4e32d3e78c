package testenv

import "strings"

// CRC16 is CRC16-XMODEM, the checksum Redis Cluster hashes keys with.
func CRC16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// Slot is the Cluster slot of key: the part between the first '{' and
// the next '}' when that is not empty, else the whole key. Tests check
// the service's keys and channels against it (and it against the
// Cluster's CLUSTER KEYSLOT).
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(CRC16(key) % 16384)
}
