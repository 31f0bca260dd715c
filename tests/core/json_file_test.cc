#include "core/json_file.h"

#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

TEST(ParseJson, ParsesAndNamesTheLineAndColumnOfASyntaxError) {
  absl::StatusOr<nlohmann::json> j = ParseJson("{\"a\": [1, 2]}", "x.json");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["a"][1], 2);
  j = ParseJson("{\n  \"a\": 1,\n  \"b\": tru,\n  \"c\": 2\n}", "config.json");
  ASSERT_FALSE(j.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(j.status()));
  EXPECT_TRUE(absl::StartsWith(j.status().message(), "config.json: not valid JSON: parse error at line 3, column")) << j.status();
  EXPECT_FALSE(absl::StrContains(j.status().message(), "json.exception")) << j.status();
  j = ParseJson("", "empty.json");
  ASSERT_FALSE(j.ok());
  EXPECT_TRUE(absl::StrContains(j.status().message(), "empty.json: not valid JSON: parse error at line 1, column 1")) << j.status();
}

TEST(ReadJsonFile, NamesTheFile) {
  const std::string path = (std::filesystem::temp_directory_path() / "lamina_json_file_test.json").string();
  ASSERT_TRUE(WriteFileAtomic(path, "[1, 2,]").ok());
  absl::StatusOr<nlohmann::json> j = ReadJsonFile(path);
  ASSERT_FALSE(j.ok());
  EXPECT_TRUE(absl::StrContains(j.status().message(), path + ": not valid JSON: parse error at line 1, column 7")) << j.status();
  ASSERT_TRUE(WriteFileAtomic(path, "[1, 2]").ok());
  j = ReadJsonFile(path);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->size(), 2u);
  std::remove(path.c_str());
  j = ReadJsonFile(path);
  ASSERT_FALSE(j.ok());
  EXPECT_TRUE(absl::StrContains(j.status().message(), path)) << j.status();
}

}  // namespace
}  // namespace lamina
