"""The toutiao user tables, in the two dialects the stores speak."""

MYSQL = (
    """
    CREATE TABLE IF NOT EXISTS user_basic (
      user_id BIGINT UNSIGNED NOT NULL PRIMARY KEY COMMENT 'snowflake id',
      account VARCHAR(20) NULL UNIQUE,
      email VARCHAR(50) NULL UNIQUE,
      status TINYINT(1) NOT NULL DEFAULT 1 COMMENT '0 disabled, 1 enabled',
      mobile CHAR(11) NOT NULL UNIQUE,
      password VARCHAR(128) NULL,
      user_name VARCHAR(32) NOT NULL,
      profile_photo VARCHAR(128) NULL,
      last_login DATETIME NULL,
      is_media TINYINT(1) NOT NULL DEFAULT 0,
      is_verified TINYINT(1) NOT NULL DEFAULT 0,
      introduction VARCHAR(50) NULL,
      certificate VARCHAR(30) NULL,
      article_count INT UNSIGNED NOT NULL DEFAULT 0,
      following_count INT UNSIGNED NOT NULL DEFAULT 0,
      fans_count INT UNSIGNED NOT NULL DEFAULT 0,
      like_count INT UNSIGNED NOT NULL DEFAULT 0,
      read_count INT UNSIGNED NOT NULL DEFAULT 0,
      create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
      update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
    """,
    """
    CREATE TABLE IF NOT EXISTS user_profile (
      user_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
      gender TINYINT(1) NOT NULL DEFAULT 0,
      birthday DATE NULL,
      real_name VARCHAR(32) NULL,
      id_number VARCHAR(20) NULL,
      id_card_front VARCHAR(128) NULL,
      id_card_back VARCHAR(128) NULL,
      id_card_handheld VARCHAR(128) NULL,
      area VARCHAR(20) NULL,
      company VARCHAR(20) NULL,
      career VARCHAR(20) NULL,
      create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
      update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
      register_media_time DATETIME NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
    """,
)

SQLITE = (
    """
    CREATE TABLE IF NOT EXISTS user_basic (
      user_id INTEGER NOT NULL PRIMARY KEY,
      account TEXT NULL UNIQUE,
      email TEXT NULL UNIQUE,
      status INTEGER NOT NULL DEFAULT 1,
      mobile TEXT NOT NULL UNIQUE,
      password TEXT NULL,
      user_name TEXT NOT NULL,
      profile_photo TEXT NULL,
      last_login TEXT NULL,
      is_media INTEGER NOT NULL DEFAULT 0,
      is_verified INTEGER NOT NULL DEFAULT 0,
      introduction TEXT NULL,
      certificate TEXT NULL,
      article_count INTEGER NOT NULL DEFAULT 0,
      following_count INTEGER NOT NULL DEFAULT 0,
      fans_count INTEGER NOT NULL DEFAULT 0,
      like_count INTEGER NOT NULL DEFAULT 0,
      read_count INTEGER NOT NULL DEFAULT 0,
      create_time TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
      update_time TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS user_profile (
      user_id INTEGER NOT NULL PRIMARY KEY,
      gender INTEGER NOT NULL DEFAULT 0,
      birthday TEXT NULL,
      real_name TEXT NULL,
      id_number TEXT NULL,
      id_card_front TEXT NULL,
      id_card_back TEXT NULL,
      id_card_handheld TEXT NULL,
      area TEXT NULL,
      company TEXT NULL,
      career TEXT NULL,
      create_time TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
      update_time TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
      register_media_time TEXT NULL
    )
    """,
)
